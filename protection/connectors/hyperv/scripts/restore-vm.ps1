# restore-vm: where the restored files go, then the VM registered from them.
#
# $Params: phase ("check" | "register"), mode ("original" | "alternate"), vm_id, path
# (alternate: the folder for the new VM; original: the VM's folder when it is no longer
# registered), files[] (backup names: "Virtual Hard Disks/<disk>", "Virtual Machines/<id>.vmcx", ...).
# check  -> folder, destinations {name: host path to write}, findings[] {code, severity, message, fix}
# register (after the server wrote every file) -> vm {id, name, host, path, state}, new_registration
#
# Original VM: the disks go back to their own paths (the VM must be off); the configuration
# is staged, the old registration removed, the staged configuration moved into place and
# registered in place with the same id. Another host: everything is staged under
# <path>\.hvbackup-restore and imported with Import-VM -Copy -GenerateNewId, so the new VM
# gets a new id and its own copy of the files; the staging folder is removed afterwards.
# Unconfirmed without a real host: Compare-VM's incompatibility ids for a missing disk
# (40010) and a missing switch (33012) are those documented for Windows Server 2016+.

$ErrorActionPreference = 'Stop'
$MaxPath = 260
$Staging = '.hvbackup-restore'

# Write-Result, Write-Failure (which ends the script) and Stop-IfHyperVAccessDenied come
# from _common.ps1, which the server puts in front of this script.
trap {
    Stop-IfHyperVAccessDenied $_
    break
}

function New-Finding([string]$Code, [string]$Message, [string]$Fix) {
    return @{ code = $Code; severity = 'error'; message = $Message; fix = $Fix }
}

function Join-Name([string]$Folder, [string]$Name) {
    # Backup names use '/'; refuse anything that could climb out of the folder.
    $parts = $Name -split '/'
    foreach ($part in $parts) {
        if (-not $part -or $part -eq '.' -or $part -eq '..' -or $part -match '[\\:*?"<>|]') {
            throw "Refusing to restore a file named '$Name'."
        }
    }
    return (Join-Path $Folder ($parts -join '\'))
}

function Get-BaseName([string]$Path) {
    # A checkpoint's disk "Disk_<GUID>.avhdx" stands for "Disk.vhdx".
    $leaf = Split-Path -Leaf $Path
    return ($leaf -replace '_[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\.avhdx$', '.vhdx').ToLowerInvariant()
}

$phase = [string]$Params.phase
$mode = [string]$Params.mode
$names = @($Params.files | ForEach-Object { [string]$_ })
$vmGuid = [guid]::Empty
if (-not [guid]::TryParse(([string]$Params.vm_id).Trim('{}'), [ref]$vmGuid)) {
    Write-Failure 'InvalidArgument' "'$($Params.vm_id)' is not a VM id."
    return
}
$vmId = $vmGuid.ToString()
$vm = Get-VM -Id $vmId -ErrorAction SilentlyContinue

# ---------------------------------------------------------------- destinations
$findings = @()
$destinations = @{}
$folder = [string]$Params.path
if ($mode -eq 'original') {
    if ($vm) {
        $folder = [string]$vm.Path
        if ([string]$vm.State -ne 'Off') {
            $findings += New-Finding 'vm-running' "$($vm.Name) is $($vm.State); its disks cannot be replaced while it runs." `
                'Turn the VM off (or restore to another location), then start the restore again.'
        }
        $disksByName = @{}
        foreach ($drive in @(Get-VMHardDiskDrive -VM $vm)) {
            if (-not $drive.Path) { continue }
            $path = [string]$drive.Path
            # Walk down to the base disk: the backup holds the disk as it was before the checkpoint.
            while ($path -like '*.avhdx') {
                $parent = (Get-VHD -Path $path).ParentPath
                if (-not $parent) { break }
                $path = $parent
            }
            $disksByName[(Get-BaseName $path)] = $path
        }
    } elseif (-not $folder) {
        $findings += New-Finding 'original-folder-unknown' 'The VM is no longer registered on this host and no original folder was given.' `
            "Give the VM's original folder, or restore to an alternate location."
    }
} elseif ($mode -eq 'alternate') {
    if (-not $folder) {
        Write-Failure 'InvalidArgument' 'A restore to another host needs a destination folder.'
        return
    }
    if (Test-Path -LiteralPath (Join-Path $folder 'Virtual Machines')) {
        $findings += New-Finding 'target-occupied' "$folder already holds a VM." 'Choose an empty folder for the restored VM.'
    }
} else {
    Write-Failure 'InvalidArgument' "Unknown restore mode '$mode'."
    return
}
if ($folder -match '^[A-Za-z]:' -and -not (Test-Path -LiteralPath $folder.Substring(0, 3))) {
    $findings += New-Finding 'target-volume-missing' "The volume of $folder does not exist on $env:COMPUTERNAME." 'Choose a folder on an existing volume.'
}

$stagingFolder = if ($folder) { Join-Path $folder $Staging } else { '' }
try {
    foreach ($name in $names) {
        $isDisk = $name -like 'Virtual Hard Disks/*'
        if ($mode -eq 'original' -and $isDisk -and $vm -and $disksByName.ContainsKey((Get-BaseName $name))) {
            $destinations[$name] = $disksByName[(Get-BaseName $name)]
        } elseif ($mode -eq 'original' -and $isDisk -and $folder) {
            $destinations[$name] = Join-Name $folder $name
        } elseif ($stagingFolder) {
            $destinations[$name] = Join-Name $stagingFolder $name
        }
    }
} catch {
    Write-Failure 'RestoreRefused' $_.Exception.Message
    return
}
$longest = @($destinations.Values) + @($names | ForEach-Object { if ($folder) { Join-Name $folder $_ } }) |
    Sort-Object Length -Descending | Select-Object -First 1
if ($longest -and $longest.Length -ge $MaxPath) {
    $findings += New-Finding 'recovery-path-too-long' "Restoring gives file paths of $($longest.Length) characters ($longest); Hyper-V cannot register a VM whose files have paths of $MaxPath characters or more." `
        'Choose a shorter destination folder.'
}

if ($phase -eq 'check') {
    Write-Result @{ folder = $folder; destinations = $destinations; findings = @($findings) }
    return
}
if ($phase -ne 'register') {
    Write-Failure 'InvalidArgument' "Unknown restore phase '$phase'."
    return
}
if ($findings.Count -gt 0) {
    Write-Failure 'RestoreRefused' (($findings | ForEach-Object { $_.message }) -join ' ')
    return
}

# ---------------------------------------------------------------- registration
$configName = $names | Where-Object { $_ -like 'Virtual Machines/*.vmcx' } | Select-Object -First 1
if (-not $configName) {
    Write-Failure 'RestoreRefused' 'The restore needs the VM configuration file (.vmcx).'
    return
}
$restoredDisks = @{}
foreach ($name in $names | Where-Object { $_ -like 'Virtual Hard Disks/*' }) {
    $restoredDisks[(Get-BaseName $name)] = $destinations[$name]
}

function Resolve-Report($Report) {
    # Point every disk the configuration cannot find at the restored file of the same
    # name; leave network adapters whose switch does not exist here disconnected.
    foreach ($issue in @($Report.Incompatibilities)) {
        if ($issue.MessageId -eq 40010 -and $issue.Source.Path) {
            $restored = $restoredDisks[(Get-BaseName ([string]$issue.Source.Path))]
            if (-not $restored) { throw "No restored file for the disk $($issue.Source.Path)." }
            Set-VMHardDiskDrive -VMHardDiskDrive $issue.Source -Path $restored
        } elseif ($issue.MessageId -eq 33012) {
            Disconnect-VMNetworkAdapter -VMNetworkAdapter $issue.Source
        }
    }
    $left = @((Compare-VM -CompatibilityReport $Report).Incompatibilities)
    if ($left.Count -gt 0) {
        throw ("Hyper-V cannot register the restored VM: " + (($left | ForEach-Object { $_.Message }) -join ' '))
    }
}

try {
    if ($mode -eq 'original') {
        $configFolder = Join-Path $folder 'Virtual Machines'
        if ($vm) {
            # Removing the registration deletes the old configuration, never the disks.
            Remove-VM -VM $vm -Force
        }
        New-Item -ItemType Directory -Force -Path $configFolder | Out-Null
        foreach ($name in $names | Where-Object { $_ -like 'Virtual Machines/*' }) {
            Move-Item -LiteralPath $destinations[$name] -Destination (Join-Path $configFolder (Split-Path -Leaf $destinations[$name])) -Force
        }
        $report = Compare-VM -Path (Join-Path $configFolder (Split-Path -Leaf $destinations[$configName])) -Register
        Resolve-Report $report
        $imported = Import-VM -CompatibilityReport $report
        $new = $false
    } else {
        $report = Compare-VM -Path $destinations[$configName] -Copy -GenerateNewId `
            -VirtualMachinePath $folder -SnapshotFilePath $folder -SmartPagingFilePath $folder `
            -VhdDestinationPath (Join-Path $folder 'Virtual Hard Disks')
        Resolve-Report $report
        $imported = Import-VM -CompatibilityReport $report
        $new = $true
    }
} catch {
    Write-Failure 'RestoreRefused' $_.Exception.Message
    return
} finally {
    if ($stagingFolder -and (Test-Path -LiteralPath $stagingFolder)) {
        Remove-Item -LiteralPath $stagingFolder -Recurse -Force -ErrorAction SilentlyContinue
    }
}

Write-Result @{
    vm = @{
        id = ([string]$imported.VMId).ToLowerInvariant()
        name = [string]$imported.Name
        host = [string]$imported.ComputerName
        path = [string]$imported.Path
        state = [string]$imported.State
    }
    new_registration = $new
}
