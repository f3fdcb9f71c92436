# What a build sees in Nix's sandbox (test_real_stack.py). /bin/sh is
# busybox there: wget and id are its applets, found without PATH.
#   probe    an ordinary derivation: tries `url` (a server the builder pod
#            itself reaches) and the pod's key and config files, and
#            writes down what it found
#   fetched  a fixed-output derivation of the file at `url`, whose content
#            hashes (sha256, hex) to `hash`: the network is its to use
{ salt ? "", url, hash }:
{
  probe = derivation {
    name = "nrbc-sandbox-probe";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    inherit salt url;
    args = [ "-c" ''
      # (busybox's wget -T would crash: signal 11)
      if wget -q -O /dev/null "$url" 2>err; then
        echo "network: reached"
      else
        echo "network: unreachable: $(cat err)"
      fi > $out
      for f in /etc/nrbc/ssh/host-key /etc/nrbc/ssh/public /etc/nix/nix.conf \
          /run/nrbc/authorized_keys /run/nrbc/sshd_config; do
        if [ -e "$f" ]; then echo "$f: visible"; else echo "$f: absent"; fi >> $out
      done
      echo "uid: $(id -u)" >> $out
    '' ];
  };
  fetched = derivation {
    name = "nrbc-sandbox-fetched";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = hash;
    inherit url;
    args = [ "-c" "wget -q -O $out \"$url\"" ];
  };
}
