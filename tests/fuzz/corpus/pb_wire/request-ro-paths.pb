/bin/sh-cls /dev/kvm > $outbuild"build"	nix/store*	nix/store2.nix/store/22222222222222222222222222222222-kvm:6
out//nix/store/22222222222222222222222222222222-kvmB$
x86_64-linux/dev/kvm/etc/ssl(