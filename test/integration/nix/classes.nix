# Three derivations that only three different builder classes can build:
# a plain one (the default class), one that requires big-parallel (a class
# whose builders have that feature, mandatory there), one for aarch64-linux
# (a class whose builders list it in extra-platforms; its builder is /bin/sh
# of the builder's own system, so this x86_64 machine runs it: the routing
# is what is tested). The top one reads all three.
{ salt ? "", only ? "" }:
let
  mk = name: extra: derivation ({
    name = "nrbc-class-${name}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${name}-$salt > $out" ];
    inherit salt;
  } // extra);
  plain = mk "plain" { };
  big = mk "big" { requiredSystemFeatures = [ "big-parallel" ]; };
  arm = mk "arm" { system = "aarch64-linux"; };
  top = derivation {
    name = "nrbc-classes";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "{ read a < ${plain}; read b < ${big}; read c < ${arm}; echo \"$a $b $c\"; } > $out" ];
    inherit salt;
  };
in
if only == "arm" then arm else top
