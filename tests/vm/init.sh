#!/bin/busybox sh
# The guest's /init (runs as PID 1 from the initramfs the lane builds).
#
# Brings up just enough to run the host's own tests on a real cgroup v2 kernel: the virtio 9p
# modules, the host root read-only over 9p, tmpfs for everything that must be written, cgroup2 on
# /sys/fs/cgroup, then the job the host wrote into the writable "results" share. The job's exit
# code lands in results/rc; the serial console carries its output. Powers off when done.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
dmesg -n 1  # keep kernel messages (each OOM kill) off the console the tests report on
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p; do
  insmod /lib/modules/$m.ko || echo "vm-init: insmod $m failed"
done
mkdir -p /host /results
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o ro,cache=loose,$opts hostroot /host || { echo "vm-init: no hostroot share"; poweroff -f; }
mount -t 9p -o rw,$opts results /results || { echo "vm-init: no results share"; poweroff -f; }
mount -t tmpfs -o mode=0755 tmpfs /host/run
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts /host/run/results /host/run/tmp
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 /host/sys/fs/cgroup
mount --bind /results /host/run/results
chmod 1777 /host/run/tmp
ip link set lo up
echo "vm-init: up after $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"
chroot /host /bin/sh /run/results/job.sh
echo $? > /results/rc
sync
poweroff -f
