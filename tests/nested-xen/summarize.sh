#!/bin/bash
# summarize.sh: median and spread (min..max) per step, size and workload
# from the results.tsv that job/run.sh writes (with free-page hints: the
# pages fastmig sent as FREE, and the agent's scan and the exchange as
# dom0 logged them; "-" where a step had none).
#   summarize.sh results.tsv
set -euo pipefail
[[ -f ${1:-} ]] || { echo "usage: summarize.sh results.tsv" >&2; exit 2; }
awk -F'\t' '
  NR == 1 || $1 == "boot" { next }
  { k = $1 "\t" $2 "\t" $3; keys[k] = 1; n[k]++
    tot[k, n[k]] = $5; pg[k, n[k]] = $8; gg[k, n[k]] = $11; xg[k, n[k]] = $13; xm[k, n[k]] = $14; sm[k, n[k]] = $15; su[k, n[k]] = $16; ss[k, n[k]] = $17; hd[k, n[k]] = $18; lm[k, n[k]] = $19; hp[k, n[k]] = $20; hs[k, n[k]] = $21; hx[k, n[k]] = $22 }
  function stat(arr, k, cnt,   i, j, v, t, m, any) {
    for (i = 1; i <= cnt; i++) { v[i] = arr[k, i] + 0; if (arr[k, i] ~ /[0-9]/) any = 1 }
    if (!any) return "-"
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    m = (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
    return sprintf(m >= 10000 ? "%.0f [%.0f..%.0f]" : "%.1f [%.1f..%.1f]", m, v[1], v[cnt])
  }
  END {
    printf "%-22s %5s %-9s %4s  %-22s %-24s %-22s %-26s %-22s %-22s %-20s %-18s %-22s %-16s %-24s %-18s %-18s\n", "step", "MiB", "mode", "runs", "total s: med [min..max]", "xl downtime ms", "of which memory ms", "ping gap ms", "guest gap ms", "stream MiB", "suspend ms", "stream s", "helpers done ms", "load MiB", "pages sent FREE", "agent scan ms", "hint exchange ms"
    for (k in keys) {
      split(k, p, "\t")
      printf "%-22s %5s %-9s %4d  %-22s %-24s %-22s %-26s %-22s %-22s %-20s %-18s %-22s %-16s %-24s %-18s %-18s\n", p[1], p[2], p[3], n[k], stat(tot, k, n[k]), stat(xg, k, n[k]), stat(xm, k, n[k]), stat(pg, k, n[k]), stat(gg, k, n[k]), stat(sm, k, n[k]), stat(su, k, n[k]), stat(ss, k, n[k]), stat(hd, k, n[k]), stat(lm, k, n[k]), stat(hp, k, n[k]), stat(hs, k, n[k]), stat(hx, k, n[k])
    }
  }' "$1" | { IFS= read -r h; echo "$h"; sort -k1,1 -k2,2n -k3,3; }
