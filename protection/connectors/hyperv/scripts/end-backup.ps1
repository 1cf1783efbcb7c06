# end-backup: after the read, keep the checkpoint's instant as a reference point (ok) or
# remove the checkpoint (failure). Either way the VM's AVHDX is merged back.
#
# $Params: vm_id, checkpoint_id (the recovery checkpoint's InstanceID), ok (bool).
# Result (ok): reference_point_id, virtual_disk_ids[], rct_ids[] (parallel arrays: the RCT id
# of each virtual disk at the checkpoint instant). Result (not ok): removed (bool; false
# when the checkpoint was already gone).

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'
$JobTimeoutSeconds = 1800

# Write-Result, Write-Failure (which ends the script) and Test-IsAccessDenied come from
# _common.ps1, which the server puts in front of this script.
trap {
    if (Test-IsAccessDenied $_) {
        Write-Failure 'AccessDenied' "This account may not manage Hyper-V on $env:COMPUTERNAME ($($_.Exception.Message)). Make it a member of Hyper-V Administrators (and of Administrators for the admin share)."
    }
    break
}

# WMI methods are called with named arguments: the positional order of a method's
# parameters is not something to rely on across Windows versions.
function Invoke-HyperVMethod($Object, [string]$Method, [hashtable]$Arguments) {
    $in = $Object.GetMethodParameters($Method)
    foreach ($key in $Arguments.Keys) { $in[$key] = $Arguments[$key] }
    return $Object.InvokeMethod($Method, $in, $null)
}

function Wait-HyperVJob($Out, [string]$What) {
    if ($Out.ReturnValue -eq 0) { return $null }
    if ($Out.ReturnValue -ne 4096) { throw "$What failed (return value $($Out.ReturnValue))." }
    $job = [wmi]$Out.Job
    $deadline = (Get-Date).AddSeconds($JobTimeoutSeconds)
    while ($job.JobState -in 2, 3, 4, 5, 6) {
        if ((Get-Date) -gt $deadline) { throw "$What did not finish within $JobTimeoutSeconds seconds." }
        Start-Sleep -Milliseconds 500
        $job.Get()
    }
    if ($job.JobState -ne 7) {
        throw "$What failed: $($job.ErrorDescription) (error $($job.ErrorCode), job state $($job.JobState))."
    }
    return $job
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
