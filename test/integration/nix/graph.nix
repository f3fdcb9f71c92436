# A graph of `n` + 1 derivations: node i depends on nodes i-1 and i-2, and
# `top` on every node, so Nix must schedule them in dependency order and
# copy each result to the builder that needs it. /bin/sh builtins only.
{ salt ? "", n ? 10 }:
let
  node = i: derivation {
    name = "nrbc-graph-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    deps = builtins.concatLists [
      (if i >= 1 then [ (node (i - 1)) ] else [ ])
      (if i >= 2 then [ (node (i - 2)) ] else [ ])
    ];
    args = [ "-c" ''
      {
        echo "node ${toString i} $salt"
        for d in $deps; do
          IFS= read -r line < "$d"; echo "  from $line"
        done
      } > "$out"
    '' ];
    inherit salt;
  };
  nodes = builtins.genList node n;
in
derivation {
  name = "nrbc-graph-top";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit nodes salt;
  args = [ "-c" ''
    n=0
    for d in $nodes; do n=$((n + 1)); done
    {
      echo "$n nodes $salt"
      # Refer to every node: the result's closure is the whole graph.
      for d in $nodes; do echo "$d"; done
    } > "$out"
  '' ];
}
