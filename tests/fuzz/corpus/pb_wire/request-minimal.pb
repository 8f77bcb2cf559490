/bin/sh-cecho hello > $outbuild"build"	nix/store*	nix/store20nix/store/00000000000000000000000000000000-hello:8
out1/nix/store/00000000000000000000000000000000-helloB
x86_64-linux(