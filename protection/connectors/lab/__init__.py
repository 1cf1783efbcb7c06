"""The lab connector: a Hyper-V host emulated in a folder of the server's own disk.

For the first-run demo, evaluation and tests. Layers, lowest first (each module
imports only those above it in this list, never back up):

- ``config``: the ``host.json`` / ``vm.json`` folder format, validated.
- ``rct``: the emulated resilient change tracking journal of a disk.
- ``guest``: a guest writing into its disks (journaled like RCT) and the per-VM lock.
- ``host``: creating lab hosts and VMs (``manage.py lab create``).
- ``session``: backup sessions (checkpoint, changed ranges, reference points).
- ``restore``: restoring and registering VMs.
- ``connector``: ``LabConnector``, the Connector protocol over all of the above.

Modules here import the connector protocol, ``ranges``, ``prerequisites`` and the
virtual-disk helpers; never the registry, another connector or Django.
"""
