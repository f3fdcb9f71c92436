# One derivation that takes memory until the kernel stops it: a shell
# string doubled without end (no nixpkgs: /bin/sh builtins only).
{ salt ? "" }:
derivation {
  name = "nrbc-memory";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "s=x; while :; do s=\"$s$s\"; done" ];
  inherit salt;
}
