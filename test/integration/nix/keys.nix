# What a build can read in its builder pod (test_real_stack.py,
# test_root_on_own_builder_reads_every_key_and_gets_nothing_else): the uid
# it runs as, the pod's name, the text files anywhere in the pod (but
# /proc, /sys, /dev and the store) with a private key header in them
# (`found PATH`), then every one of those and every regular file under
# `dirs` (as `file PATH BASE64`, or `unreadable PATH`). Only the builder
# pod's own tools (Debian 12, merged /usr): a remote build has no PATH.
{ salt ? "", dirs ? "" }:
derivation {
  name = "nrbc-keys";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    {
      echo "uid $(/usr/bin/id -u)"
      echo "pod $(/usr/bin/cat /proc/sys/kernel/hostname)"
      for d in $dirs; do
        if [ -e "$d" ]; then echo "present $d"; else echo "absent $d"; fi
      done
      found=$(/usr/bin/find / \( -path /proc -o -path /sys -o -path /dev -o -path /nix/store \) \
        -prune -o -type f -size -1024k -exec /usr/bin/grep -lI -e "PRIVATE KEY-----" {} + \
        2>/dev/null | /usr/bin/sort)
      printf '%s\n' "$found" | while read -r f; do [ -z "$f" ] || echo "found $f"; done
      {
        for d in $dirs; do
          [ -e "$d" ] && /usr/bin/find -L "$d" -type f
        done
        printf '%s\n' "$found"
      } 2>/dev/null | /usr/bin/sort -u | while read -r f; do
        [ -n "$f" ] || continue
        if c=$(/usr/bin/base64 -w0 "$f" 2>/dev/null); then
          echo "file $f $c"
        else
          echo "unreadable $f"
        fi
      done
      echo end
    } >"$out"
  '' ];
  inherit salt dirs;
}
