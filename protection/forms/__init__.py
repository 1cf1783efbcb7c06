"""Forms of the protection pages: hosts, VM and group actions, and the group wizard."""
