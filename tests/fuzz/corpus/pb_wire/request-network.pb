/bin/sh-ccat /etc/resolv.conf > $outbuild"build"	nix/store*	nix/store22nix/store/11111111111111111111111111111111-fetched::
out3/nix/store/11111111111111111111111111111111-fetchedB
x86_64-linux€€@ (