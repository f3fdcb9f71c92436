# One output of `size` bytes of random data (throughput tests). Uses the
# host's head(1): sandbox = false on the test builders.
{ salt ? "", size ? 1048576 }:
derivation {
  name = "nrbc-size-${toString size}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/usr/bin/head -c ${toString size} /dev/urandom > $out" ];
  inherit salt;
}
