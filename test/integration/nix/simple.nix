# One derivation built with /bin/sh builtins only: no nixpkgs, no network.
# `salt` makes a fresh store path per test run, so a build really happens.
{ salt ? "" }:
derivation {
  name = "nrbc-simple";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo \"hello from a remote builder $salt\" > $out" ];
  inherit salt;
}
