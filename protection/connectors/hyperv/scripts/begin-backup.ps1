# begin-backup: take a recovery checkpoint of one VM and describe its frozen files.
#
# $Params: vm_id (GUID), consistency ("application" | "crash"), name_prefix (how our
# recovery checkpoints are named; stale ones with this prefix are removed first).
# Result: checkpoint_id (the checkpoint's InstanceID), checkpoint_name, consistency
# ("application" | "crash", what was really taken), consistency_note, removed_stale[],
# vm {id, name, host, path, state}, disks[] {path, frozen_path, disk_id, virtual_size,
# file_size, format, parents[] {path, disk_id, file_size}}, config_files[] {path, name, size}.
# Runs on the node that owns the VM, in root\virtualization\v2 (Windows Server 2016+).

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'
$RecoverySnapshot = 32768          # SnapshotType: recovery checkpoint (for backup)
$ApplicationConsistent = 1         # ConsistencyLevel of Msvm_VirtualSystemSnapshotSettingData
$CrashConsistent = 2

# Write-Result, Write-Failure (which ends the script) and Stop-IfHyperVAccessDenied come
# from _common.ps1, which the server puts in front of this script.
trap {
    Stop-IfHyperVAccessDenied $_
    break
}

function Remove-Checkpoint($SnapshotService, $Snapshot) {
    $out = Invoke-HyperVMethod $SnapshotService 'DestroySnapshot' @{ AffectedSnapshot = $Snapshot.__PATH }
    [void](Wait-HyperVJob $out "Removing checkpoint '$($Snapshot.ElementName)'")
}

function Get-DiskChain([string]$Path) {
    # The frozen file and, for a differencing disk, every parent down to the base disk.
    $vhd = Get-VHD -Path $Path
    $parents = @()
    $parentPath = $vhd.ParentPath
    while ($parentPath) {
        $parent = Get-VHD -Path $parentPath
        $parents += @{ path = $parent.Path; disk_id = [string]$parent.DiskIdentifier; file_size = [int64]$parent.FileSize }
        $parentPath = $parent.ParentPath
    }
    return @{ vhd = $vhd; parents = $parents }
}

# ---------------------------------------------------------------- the VM
$vmGuid = [guid]::Empty
if (-not [guid]::TryParse(([string]$Params.vm_id).Trim('{}'), [ref]$vmGuid)) {
    Write-Failure 'InvalidArgument' "'$($Params.vm_id)' is not a VM id."
    return
}
$vmId = $vmGuid.ToString().ToUpperInvariant()
$prefix = [string]$Params.name_prefix
$vm = Get-WmiObject -Namespace $Namespace -Class Msvm_ComputerSystem -Filter "Name='$vmId'"
if (-not $vm) {
    Write-Failure 'VMNotFound' "No VM with id $vmId is registered on $env:COMPUTERNAME."
    return
}
$vmInfo = Get-VM -Id $vmId
$snapshotService = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemSnapshotService
$managementService = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemManagementService

# ---------------------------------------------------------------- stale checkpoints
# A recovery checkpoint of ours that still exists was left by a backup that died: its
# AVHDX keeps growing until someone removes it. Checkpoints others made are left alone.
$removed = @()
if ($prefix) {
    $stale = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemSettingData `
        -Filter "VirtualSystemIdentifier='$vmId' AND VirtualSystemType='Microsoft:Hyper-V:Snapshot:Recovery'"
    foreach ($snapshot in @($stale)) {
        if ($snapshot -and $snapshot.ElementName -like "$prefix*") {
            Remove-Checkpoint $snapshotService $snapshot
            $removed += [string]$snapshot.ElementName
        }
    }
}

# ---------------------------------------------------------------- replicas
# A replica VM is backed up crash-consistent only, and never while replication is
# rebuilding it, applying logs or moving it: the files would not be a usable VM.
$isReplica = [string]$vmInfo.ReplicationMode -in 'Replica', 'ExtendedReplica'
if ($isReplica) {
    $state = [string]$vmInfo.ReplicationState
    $health = [string]$vmInfo.ReplicationHealth
    # Names of Microsoft.HyperV.PowerShell.VMReplicationState.
    $refusedStates = @{
        'ReadyForInitialReplication' = 'initial replication has not run yet'
        'WaitingForInitialReplication' = 'initial replication is pending'
        'InitialReplicationInProgress' = 'initial replication is in progress'
        'Resynchronizing' = 'the replica is being resynchronized'
        'ResynchronizeSuspended' = 'resynchronization is suspended'
        'WaitingForStartResynchronize' = 'the replica needs a resynchronization'
        'PreparedForFailover' = 'a failover is in progress'
        'FailedOverWaitingCompletion' = 'a failover is waiting for completion'
        'RecoveryInProgress' = 'a recovery of the replica is in progress'
        'FailbackInProgress' = 'a failback is in progress'
        'Error' = 'replication is in error'
    }
    if ($health -eq 'Critical') {
        Write-Failure 'BackupRefused' "$($vmInfo.Name) is a replica whose replication health is Critical."
        return
    }
    if ($refusedStates.ContainsKey($state)) {
        Write-Failure 'BackupRefused' "$($vmInfo.Name) is a replica that cannot be backed up now: $($refusedStates[$state])."
        return
    }
    # Unconfirmed without a real replica server: how "applying .hrl logs" and a live
    # migration show up; both are looked for in the VM's status text and operational status.
    $busy = @($vmInfo.OperationalStatus | ForEach-Object { [string]$_ })
    if ([string]$vmInfo.Status -match 'Applying|log' -or $busy -match 'Migrat|StorageMigration') {
        Write-Failure 'BackupRefused' "$($vmInfo.Name) is a replica that is applying replication logs or migrating."
        return
    }
}

# ---------------------------------------------------------------- the checkpoint
function New-RecoveryCheckpoint([int]$Level) {
    $settings = ([wmiclass]"\\.\$($Namespace):Msvm_VirtualSystemSnapshotSettingData").CreateInstance()
    $settings.ConsistencyLevel = $Level
    $settings.IgnoreNonSnapshottableDisks = $true
    $out = Invoke-HyperVMethod $snapshotService 'CreateSnapshot' @{
        AffectedSystem = $vm.__PATH
        SnapshotSettings = $settings.GetText(2)
        SnapshotType = [uint16]$RecoverySnapshot
    }
    $job = Wait-HyperVJob $out 'Creating the recovery checkpoint'
    if ($job) {
        return [wmi](@($job.GetRelated('Msvm_VirtualSystemSettingData'))[0].__PATH)
    }
    return [wmi]$out.ResultingSnapshot
}

$wanted = [string]$Params.consistency
$snapshot = $null
$taken = 'crash'
$note = ''
if ($isReplica) {
    $note = 'replica VMs are checkpointed crash-consistent'
} elseif ($wanted -eq 'crash') {
    $note = 'crash-consistent checkpoint requested'
} else {
    try {
        $snapshot = New-RecoveryCheckpoint $ApplicationConsistent
        $taken = 'application'
        $note = 'application-consistent checkpoint (guest VSS through the integration services)'
    } catch {
        $note = "the guest could not take an application-consistent checkpoint ($($_.Exception.Message))"
    }
}
try {
    if (-not $snapshot) {
        $snapshot = New-RecoveryCheckpoint $CrashConsistent
    }
} catch {
    Write-Failure 'CheckpointFailed' "The recovery checkpoint of $($vmInfo.Name) could not be created: $($_.Exception.Message)"
    return
}

# From here on the checkpoint exists: any failure removes it before reporting.
try {
    # Our name is how a later backup recognises a checkpoint this one leaves behind if it
    # dies. Unconfirmed whether every host accepts renaming a recovery checkpoint: if it
    # does not, the backup goes on and says so.
    try {
        $snapshot.ElementName = $prefix + (Get-Date).ToString('yyyy-MM-dd HH:mm:ss')
        $out = Invoke-HyperVMethod $managementService 'ModifySystemSettings' @{ SystemSettings = $snapshot.GetText(2) }
        [void](Wait-HyperVJob $out 'Naming the recovery checkpoint')
    } catch {
        $note = "$note; the checkpoint could not be named ($($_.Exception.Message)): if this backup dies, remove it by hand"
    }
    $snapshot.Get()

    $disks = @()
    $frozenDisks = @($snapshot.GetRelated('Msvm_StorageAllocationSettingData') |
        Where-Object { $_.ResourceType -eq 31 -and $_.ResourceSubType -eq 'Microsoft:Hyper-V:Virtual Hard Disk' })
    $liveDisks = @(Get-VMHardDiskDrive -VM $vmInfo)
    foreach ($disk in $frozenDisks) {
        $frozenPath = [string]$disk.HostResource[0]
        $chain = Get-DiskChain $frozenPath
        $vhd = $chain.vhd
        $disks += @{
            # Hyper-V freezes the disk in place and sends the VM's writes to a new AVHDX,
            # so the checkpoint's file is the disk's own path.
            path = $frozenPath
            frozen_path = $frozenPath
            disk_id = [string]$vhd.DiskIdentifier
            virtual_size = [int64]$vhd.Size
            file_size = [int64]$vhd.FileSize
            format = ([string]$vhd.VhdFormat).ToLowerInvariant()
            parents = @($chain.parents)
        }
    }
    if ($liveDisks.Count -gt $frozenDisks.Count) {
        # Pass-through disks have no file: they are not part of a host-level backup.
        $skipped = $liveDisks.Count - $frozenDisks.Count
        $note = "$note; $skipped disk(s) without a virtual disk file skipped"
    }

    $configFiles = @()
    $systemSettings = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemSettingData `
        -Filter "VirtualSystemIdentifier='$vmId' AND VirtualSystemType='Microsoft:Hyper-V:System:Realized'"
    $configFolder = Join-Path $systemSettings.ConfigurationDataRoot 'Virtual Machines'
    foreach ($file in @(Get-ChildItem -LiteralPath $configFolder -File -ErrorAction SilentlyContinue)) {
        if ($file.BaseName -eq $vmId -and $file.Extension -in '.vmcx', '.vmrs', '.vmgs') {
            $configFiles += @{ path = $file.FullName; name = $file.Name; size = [int64]$file.Length }
        }
    }

    Write-Result @{
        checkpoint_id = [string]$snapshot.InstanceID
        checkpoint_name = [string]$snapshot.ElementName
        consistency = $taken
        consistency_note = $note
        removed_stale = @($removed)
        vm = @{
            id = $vmId.ToLowerInvariant()
            name = [string]$vmInfo.Name
            host = [string]$vmInfo.ComputerName
            path = [string]$vmInfo.Path
            state = [string]$vmInfo.State
        }
        disks = @($disks)
        config_files = @($configFiles)
    }
} catch {
    $why = $_.Exception.Message
    try { Remove-Checkpoint $snapshotService $snapshot } catch { $why = "$why (removing the checkpoint failed too: $($_.Exception.Message))" }
    Write-Failure 'CheckpointFailed' "The backup of $($vmInfo.Name) could not start: $why"
}
