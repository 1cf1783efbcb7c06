# inventory: the host, its volumes and cluster shared volumes, and its VMs with
# their controllers, disks, integration services and replication.
# Params: vm_id (optional) - only that VM (VMNotFound when this host has no such VM).
# The result is kept flat (lists keyed by vm_id) so ConvertTo-Json -Depth 5 never
# truncates a nested object into its type name.

$computer = $env:COMPUTERNAME
try {
    $vmHost = Get-VMHost
} catch {
    if (Test-IsAccessDenied $_) { Write-Failure 'AccessDenied' "This account may not manage Hyper-V on ${computer}: $($_.Exception.Message)" }
    throw
}

$wanted = $null
if ($null -ne $Params.PSObject.Properties['vm_id'] -and $Params.vm_id) { $wanted = [string]$Params.vm_id }
try {
    if ($wanted) {
        $vms = @(Get-VM -Id $wanted -ErrorAction SilentlyContinue)
        if ($vms.Count -eq 0) { Write-Failure 'VMNotFound' "No VM with id $wanted on $computer." }
    } else {
        $vms = @(Get-VM)
    }
} catch {
    if (Test-IsAccessDenied $_) { Write-Failure 'AccessDenied' "This account may not list the VMs on ${computer}: $($_.Exception.Message)" }
    throw
}

$volumes = @{}   # UniqueId -> volume record, so each volume is reported once

function Add-VolumeOf {
    # The volume that holds $Path (local or CSV), recorded in $volumes; its id, or $null.
    param([string]$Path)
    if (-not $Path -or $Path.StartsWith('\\')) { return $null }
    try {
        $volume = Get-Volume -FilePath $Path -ErrorAction Stop
    } catch {
        # Older hosts, or a path Get-Volume cannot map: fall back to the drive's Win32_Volume.
        $root = [System.IO.Path]::GetPathRoot($Path)
        if (-not $root) { return $null }
        $w32 = Get-CimInstance -ClassName Win32_Volume -Filter ("Name='{0}'" -f $root.Replace('\', '\\')) -ErrorAction SilentlyContinue
        if ($null -eq $w32) { return $null }
        $id = [string]$w32.DeviceID
        if (-not $volumes.ContainsKey($id)) {
            $volumes[$id] = @{ id = $id; path = [string]$w32.Name; label = [string]$w32.Label; size = [int64]$w32.Capacity; free = [int64]$w32.FreeSpace }
        }
        return $id
    }
    $id = [string]$volume.UniqueId
    if (-not $volumes.ContainsKey($id)) {
        $path = ''
        if ($volume.DriveLetter) { $path = "$($volume.DriveLetter):\" }
        $volumes[$id] = @{ id = $id; path = $path; label = [string]$volume.FileSystemLabel; size = [int64]$volume.Size; free = [int64]$volume.SizeRemaining }
    }
    return $id
}

function Get-GuestOsName {
    # The guest's OS name from the KVP exchange (empty when the guest does not report it).
    param([string]$VmId)
    try {
        $kvp = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_KvpExchangeComponent -Filter "SystemName='$VmId'" -ErrorAction Stop
    } catch {
        return ''
    }
    if ($null -eq $kvp -or $null -eq $kvp.GuestIntrinsicExchangeItems) { return '' }
    foreach ($item in $kvp.GuestIntrinsicExchangeItems) {
        $xml = [xml]$item
        $name = ($xml.INSTANCE.PROPERTY | Where-Object { $_.NAME -eq 'Name' }).VALUE
        if ($name -eq 'OSName') {
            return [string](($xml.INSTANCE.PROPERTY | Where-Object { $_.NAME -eq 'Data' }).VALUE)
        }
    }
    return ''
}

$vmRecords = @()
$controllerRecords = @()
$diskRecords = @()
$serviceRecords = @()
foreach ($vm in $vms) {
    $vmId = ([string]$vm.VMId).ToLowerInvariant()
    $icVersion = $null
    if ($null -ne $vm.IntegrationServicesVersion) { $icVersion = [string]$vm.IntegrationServicesVersion }
    $smbDialect = $null
    if (([string]$vm.Path).StartsWith('\\')) {
        $parts = ([string]$vm.Path).TrimStart('\').Split('\')
        $connection = Get-SmbConnection -ServerName $parts[0] -ShareName $parts[1] -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($null -ne $connection) { $smbDialect = [string]$connection.Dialect }
    }
    $vmRecords += @{
        id = $vmId
        name = [string]$vm.Name
        computer_name = [string]$vm.ComputerName
        state = [string]$vm.State
        generation = [int]$vm.Generation
        configuration_version = [string]$vm.Version
        integration_services_version = $icVersion
        path = [string]$vm.Path
        is_clustered = [bool]$vm.IsClustered
        replication_mode = [string]$vm.ReplicationMode
        replication_health = [string]$vm.ReplicationHealth
        replication_state = [string]$vm.ReplicationState
        guest_os = Get-GuestOsName $vmId
        smb_dialect = $smbDialect
        volume_id = Add-VolumeOf ([string]$vm.Path)
    }

    foreach ($controller in @(Get-VMScsiController -VM $vm)) {
        $controllerRecords += @{ vm_id = $vmId; kind = 'SCSI'; number = [int]$controller.ControllerNumber }
    }
    if ($vm.Generation -eq 1) {
        foreach ($controller in @(Get-VMIdeController -VM $vm)) {
            $controllerRecords += @{ vm_id = $vmId; kind = 'IDE'; number = [int]$controller.ControllerNumber }
        }
    }

    foreach ($drive in @(Get-VMHardDiskDrive -VM $vm)) {
        $record = @{
            vm_id = $vmId
            controller_type = [string]$drive.ControllerType
            controller_number = [int]$drive.ControllerNumber
            controller_location = [int]$drive.ControllerLocation
            path = ''
            disk_number = $null
            vhd_format = $null
            vhd_type = $null
            size = [int64]0
            file_size = [int64]0
            parent_path = $null
            disk_identifier = $null
            volume_id = $null
            error = $null
        }
        if ($null -ne $drive.DiskNumber) {
            # A pass-through disk: a physical disk of the host, no file to read.
            $record.disk_number = [int]$drive.DiskNumber
            try { $record.size = [int64](Get-Disk -Number $drive.DiskNumber -ErrorAction Stop).Size } catch { $null = $_ }
        } else {
            $record.path = [string]$drive.Path
            try {
                $vhd = Get-VHD -Path $drive.Path -ErrorAction Stop
                $record.vhd_format = [string]$vhd.VhdFormat
                $record.vhd_type = [string]$vhd.VhdType
                $record.size = [int64]$vhd.Size
                $record.file_size = [int64]$vhd.FileSize
                if ($vhd.ParentPath) { $record.parent_path = [string]$vhd.ParentPath }
                $record.disk_identifier = [string]$vhd.DiskIdentifier
            } catch {
                $record.error = "Get-VHD failed: $($_.Exception.Message)"
            }
            $record.volume_id = Add-VolumeOf $record.path
        }
        $diskRecords += $record
    }

    foreach ($service in @(Get-VMIntegrationService -VM $vm)) {
        $serviceRecords += @{
            vm_id = $vmId
            name = [string]$service.Name
            id = [string]$service.Id
            enabled = [bool]$service.Enabled
            status = [string]$service.PrimaryStatusDescription
        }
    }
}

$replicationRecords = @()
foreach ($replication in @(Get-VMReplication -ErrorAction SilentlyContinue)) {
    # Without a VM id the record cannot be matched; the VM's own replication fields remain.
    if (-not $replication.VMId) { continue }
    if ($wanted -and ([string]$replication.VMId) -ne $wanted) { continue }
    $replicationRecords += @{
        vm_id = ([string]$replication.VMId).ToLowerInvariant()
        mode = [string]$replication.ReplicationMode
        state = [string]$replication.State
        health = [string]$replication.Health
    }
}

$clusterName = Get-ClusterNameOrNull
$nodes = @()
$csvRecords = @()
if ($clusterName) {
    $nodes = @(Get-ClusterNode | ForEach-Object { [string]$_.Name })
    foreach ($csv in @(Get-ClusterSharedVolume -ErrorAction SilentlyContinue)) {
        foreach ($info in @($csv.SharedVolumeInfo)) {
            $csvRecords += @{
                name = [string]$csv.Name
                path = [string]$info.FriendlyVolumeName
                owner_node = [string]$csv.OwnerNode.Name
                size = [int64]$info.Partition.Size
                free = [int64]$info.Partition.FreeSpace
            }
        }
    }
}

# VSS providers of type 3 (hardware) registered on this host.
$hardwareVss = $false
try {
    foreach ($provider in @(Get-ChildItem 'HKLM:\SYSTEM\CurrentControlSet\Services\VSS\Providers' -ErrorAction Stop)) {
        $type = (Get-ItemProperty -Path $provider.PSPath -Name Type -ErrorAction SilentlyContinue).Type
        if ($type -eq 3) { $hardwareVss = $true }
    }
} catch { $null = $_ }

$hostRecord = Get-HostOsFacts
$hostRecord.name = $computer
$hostRecord.fqdn = [string]$vmHost.FullyQualifiedDomainName
$hostRecord.cluster_name = $clusterName
$hostRecord.nodes = $nodes
$hostRecord.hardware_vss_provider = $hardwareVss
$hostRecord.default_vhd_path = [string]$vmHost.VirtualHardDiskPath
$hostRecord.default_volume_id = Add-VolumeOf ([string]$vmHost.VirtualHardDiskPath)

Write-Result @{
    host = $hostRecord
    volumes = @($volumes.Values)
    csvs = $csvRecords
    vms = $vmRecords
    controllers = $controllerRecords
    disks = $diskRecords
    integration_services = $serviceRecords
    replications = $replicationRecords
}
