"""The Hyper-V connector: control over WinRM (PowerShell scripts), data over SMB.

``connector.HyperVConnector`` implements the connector protocol. Nothing here
imports Django or the lab connector.
"""
