"""The Hyper-V connector: control over WinRM (PowerShell scripts), data over SMB."""
