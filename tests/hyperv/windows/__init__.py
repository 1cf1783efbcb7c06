"""The emulated Windows side of a Hyper-V host (test code).

Placeholder in branch ``hvbackup`` only: helper "winrm" owns this module (the
``EmulatedHyperV`` dispatcher). ``backup.py`` and ``restore.py`` expose ``SCRIPTS``.
"""
