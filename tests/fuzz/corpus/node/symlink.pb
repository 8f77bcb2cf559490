
sh/bin/busybox