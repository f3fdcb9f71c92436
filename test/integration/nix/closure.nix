# `n` small derivations that all read one shared input `big` of `size`
# bytes, and a top one that collects their results (the n results only, not
# `big`). For benchmark P6c (test/bench/bench_nix_closure.py) and tests: the
# client builds `big` itself first (`-A big`, locally), so every remote
# builder has to receive it from the client, once per store.
#
# Uses the host's /usr/bin tools: the test builders run with sandbox =
# false; a local (sandboxed) build needs /usr/bin in sandbox-paths.
# `big` is deterministic (a repeated line), so a local build of the whole
# expression gives the same outputs byte for byte.
{ salt ? "", n ? 10, size ? 67108864 }:
let
  big = derivation {
    name = "nrbc-closure-input";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      /usr/bin/yes "nrbc closure input $salt" | /usr/bin/head -c ${toString size} > "$out"
    '' ];
    inherit salt;
  };
  user = i: derivation {
    name = "nrbc-closure-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      set -e
      sum=$(/usr/bin/sha256sum < "$big")
      size=$(/usr/bin/wc -c < "$big")
      echo "user ${toString i} $salt $size ''${sum%% *}" > "$out"
    '' ];
    inherit big salt;
  };
  users = builtins.genList user n;
  top = derivation {
    name = "nrbc-closure-top";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      for u in $users; do IFS= read -r line < "$u"; echo "$line"; done > "$out"
    '' ];
    inherit users salt;
  };
in
top // { inherit big users; }
