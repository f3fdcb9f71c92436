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
#
# parts > 1 makes `big` the top of a chain of `parts` store paths of
# size/parts bytes each, every one referring to the one before (its path on
# the first line), the shape of a real input's closure (a program, its
# libraries, theirs): a builder needs all of them. For test_cache.py and
# the binary-cache benchmark, which serve that closure from a binary cache.
#
# seconds > 0: each user also takes that long (sleep), so that a build with
# a high maxJobs holds several builders' slots at once.
{ salt ? "", n ? 10, size ? 67108864, parts ? 1, seconds ? 0 }:
let
  partSize = size / parts;
  # part 0 refers to nothing; part i to part i-1; `big` is the last part.
  part = i: derivation ({
    name = if i == parts - 1 then "nrbc-closure-input" else "nrbc-closure-input-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ''
      # Deterministic bytes that do not compress, as programs and
      # libraries hardly do: AES-CTR of zeros under a key from the salt.
      { if [ -n "$prev" ]; then echo "$prev"; fi
        /usr/bin/openssl enc -aes-128-ctr -pbkdf2 -nosalt -pass "pass:nrbc ${toString i} $salt" \
          < /dev/zero 2>/dev/null; } | /usr/bin/head -c ${toString partSize} > "$out"
    '' ];
    inherit salt;
  } // (if i > 0 then { prev = part (i - 1); } else { }));
  big = if parts > 1 then part (parts - 1) else derivation {
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
      ${if seconds > 0 then "/usr/bin/sleep ${toString seconds}" else ":"}
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
