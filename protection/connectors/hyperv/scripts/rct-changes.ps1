# rct-changes: the virtual-disk ranges written since an RCT id (resilient change tracking).
#
# $Params: vm_id, path (the checkpoint's frozen disk file), limit_id (the RCT id recorded
# by the previous backup's reference point).
# Result: virtual_size, ranges[] as [offset, length] pairs of VIRTUAL disk offsets,
# sorted and merged. An id Hyper-V no longer knows (disk replaced, tracking reset,
# reference point destroyed) -> {"ok": false, "error": {"kind": "ChangeTrackingLost"}}:
# the server then reads the whole disk and records a consistency check.

$ErrorActionPreference = 'Stop'
$Namespace = 'root\virtualization\v2'

# Write-Result, Write-Failure (which ends the script) and Stop-IfHyperVAccessDenied come
# from _common.ps1, which the server puts in front of this script.
trap {
    Stop-IfHyperVAccessDenied $_
    break
}

$path = [string]$Params.path
$limitId = [string]$Params.limit_id
if (-not $path -or -not $limitId) {
    Write-Failure 'InvalidArgument' 'rct-changes needs a disk path and an RCT id.'
    return
}
try {
    $virtualSize = [uint64](Get-VHD -Path $path).Size
} catch {
    Write-Failure 'InvalidArgument' "The disk $path cannot be opened: $($_.Exception.Message)"
    return
}
$imageService = Get-WmiObject -Namespace $Namespace -Class Msvm_ImageManagementService

$ranges = New-Object System.Collections.Generic.List[object]
$lastOffset = [uint64]0
$lastLength = [uint64]0
$offset = [uint64]0
while ($offset -lt $virtualSize) {
    # Named parameters: the positional order of WMI method arguments is not guaranteed.
    $in = $imageService.GetMethodParameters('GetVirtualDiskChanges')
    $in.Path = $path
    $in.LimitId = $limitId
    $in.ByteOffset = $offset
    $in.ByteLength = $virtualSize - $offset
    $out = $imageService.InvokeMethod('GetVirtualDiskChanges', $in, $null)
    if ($out.ReturnValue -eq 4096) {
        $job = [wmi]$out.Job
        while ($job.JobState -in 2, 3, 4) { Start-Sleep -Milliseconds 200; $job.Get() }
        if ($job.JobState -ne 7) {
            Write-Failure 'ChangeTrackingLost' "Hyper-V cannot list the changes of $path since $limitId`: $($job.ErrorDescription)"
            return
        }
    } elseif ($out.ReturnValue -ne 0) {
        Write-Failure 'ChangeTrackingLost' "Hyper-V no longer knows RCT id $limitId for $path (return value $($out.ReturnValue))."
        return
    }
    $offsets = @($out.ChangedByteOffsets)
    $lengths = @($out.ChangedByteLengths)
    for ($i = 0; $i -lt $offsets.Count; $i++) {
        $o = [uint64]$offsets[$i]
        $n = [uint64]$lengths[$i]
        if ($n -eq 0) { continue }
        if ($lastLength -gt 0 -and $o -le $lastOffset + $lastLength) {
            $lastLength = [math]::Max($lastLength, $o + $n - $lastOffset)
        } else {
            if ($lastLength -gt 0) { $ranges.Add(@($lastOffset, $lastLength)) }
            $lastOffset = $o
            $lastLength = $n
        }
    }
    $processed = [uint64]$out.ProcessedByteLength
    if ($processed -eq 0) {
        Write-Failure 'ChangeTrackingLost' "Hyper-V made no progress listing the changes of $path at offset $offset."
        return
    }
    $offset += $processed
}
if ($lastLength -gt 0) { $ranges.Add(@($lastOffset, $lastLength)) }

Write-Result @{ virtual_size = $virtualSize; ranges = $ranges }
