# `n` independent derivations that each take `seconds`, and one that needs
# them all: a builder with maxJobs 4 gets four of them at once.
{ salt ? "", n ? 8, seconds ? 3 }:
let
  job = i: derivation {
    name = "nrbc-parallel-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    # sleep: busybox's applet where /bin/sh is busybox (a sandbox), else
    # the host's (an unsandboxed build, PATH unset).
    args = [ "-c" "sleep ${toString seconds} 2>/dev/null || /bin/sleep ${toString seconds}; echo \"job ${toString i} $salt\" > $out" ];
    inherit salt;
  };
in
derivation {
  name = "nrbc-parallel-top";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  jobs = builtins.genList job n;
  inherit salt;
  args = [ "-c" "for j in $jobs; do IFS= read -r l < $j; echo \"$l\"; done > $out" ];
}
