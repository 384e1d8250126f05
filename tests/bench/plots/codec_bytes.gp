# SPDX-License-Identifier: Apache-2.0
# Bytes per sample: our encoder vs the reference encoder's bytes for the same value (bench_codec,
# codec_bytes.tsv). Columns: 1 sample, 2 ours, 3 reference, 4 ratio, 5 identical, 6 PSON v1 (legacy
# reference, 0 = none), 7 compact JSON (0 = none).
load dir.'common.gp'
set title "Encoded size of typical samples: our PSON v2 encoder vs the reference encoders (label: ours / reference)"
set ylabel "bytes"
set yrange [0:*]
set xrange [-0.6:*]
set style fill solid 0.8 border -1
set boxwidth 0.2
set xtics rotate by -25 left offset -1,0 font ",10"
set bmargin 9
set key top left
plot data using ($0-0.3):2:(0.2) with boxes lc rgb "#1f77b4" title "ours (PSON v2)", \
     data using ($0-0.1):3:(0.2) with boxes lc rgb "#bbbbbb" title "reference encoder (PSON v2)", \
     data using ($0+0.1):($6 > 0 ? $6 : NaN):(0.2) with boxes lc rgb "#ff7f0e" title "legacy reference (PSON v1)", \
     data using ($0+0.3):($7 > 0 ? $7 : NaN):(0.2) with boxes lc rgb "#2ca02c" title "compact JSON", \
     data using ($0-0.3):($2+2):(sprintf("%.2f", $4)) with labels notitle, \
     data using 0:(NaN):xtic(1) notitle
