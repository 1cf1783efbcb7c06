# end-backup: after the read, keep the checkpoint's instant as a reference point (ok) or
# remove the checkpoint (failure). Either way the VM's AVHDX is merged back.
#
# $Params: vm_id, checkpoint_id (the recovery checkpoint's InstanceID), ok (bool).
# Result (ok): reference_point_id, virtual_disk_ids[], rct_ids[] (parallel arrays: the RCT id
# of each virtual disk at the checkpoint instant). Result (not ok): removed (bool; false
# when the checkpoint was already gone).

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'

# Write-Result, Write-Failure (which ends the script) and Stop-IfHyperVAccessDenied come
# from _common.ps1, which the server puts in front of this script.
trap {
    Stop-IfHyperVAccessDenied $_
    break
}

$checkpointId = [string]$Params.checkpoint_id
# InstanceIDs look like "Microsoft:<GUID>" (snapshots may add "\<GUID>"); anything else
# would end up inside a WQL string.
if ($checkpointId -notmatch '^[A-Za-z0-9:{}\\\-]+$') {
    Write-Failure 'InvalidArgument' "'$checkpointId' is not a checkpoint id."
    return
}
$wqlId = $checkpointId.Replace('\', '\\')
$snapshotService = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemSnapshotService
$snapshot = Get-WmiObject -Namespace $Namespace -Class Msvm_VirtualSystemSettingData -Filter "InstanceID='$wqlId'"

if (-not $Params.ok) {
    if (-not $snapshot) {
        Write-Result @{ removed = $false }
        return
    }
    $out = Invoke-HyperVMethod $snapshotService 'DestroySnapshot' @{ AffectedSnapshot = $snapshot.__PATH }
    [void](Wait-HyperVJob $out "Removing the recovery checkpoint '$($snapshot.ElementName)'")
    Write-Result @{ removed = $true }
    return
}

if (-not $snapshot) {
    Write-Failure 'CheckpointFailed' "The recovery checkpoint $checkpointId no longer exists; the backup cannot be kept as a reference point."
    return
}
try {
    $out = Invoke-HyperVMethod $snapshotService 'ConvertToReferencePoint' @{ AffectedSnapshot = $snapshot.__PATH }
    $job = Wait-HyperVJob $out 'Converting the recovery checkpoint to a reference point'
    if ($job) {
        $reference = [wmi](@($job.GetRelated('Msvm_VirtualSystemReferencePoint'))[0].__PATH)
    } else {
        $reference = [wmi]$out.ResultingReferencePoint
    }
} catch {
    Write-Failure 'CheckpointFailed' $_.Exception.Message
    return
}
Write-Result @{
    reference_point_id = [string]$reference.InstanceID
    virtual_disk_ids = @($reference.VirtualDiskIdentifiers | ForEach-Object { [string]$_ })
    rct_ids = @($reference.ResilientChangeTrackingIdentifiers | ForEach-Object { [string]$_ })
}
