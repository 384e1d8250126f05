# SPDX-License-Identifier: Apache-2.0
# Store ingest and drain rates beside the raw SQLite batched-insert floor (bench_store's
# store_rates.tsv and drain_bench.py's store_drain.tsv, concatenated). Columns: 1 what, 2 rows/s,
# 3 floor rows/s, 4 ratio, 5 what the floor is.
load dir.'common.gp'
set title "Store rates (rows/s, log scale) beside the raw SQLite batched INSERT floor measured in the same run; label = rate / floor"
set logscale y 10
set format y "%.0s%c"
set ylabel "rows per second (log scale)"
set yrange [1000:*]
set xrange [-0.6:*]
set style fill solid 0.8 border -1
set boxwidth 0.38
set xtics rotate by -25 left offset -1,0 font ",10"
set bmargin 6
set key top right
plot data using ($0-0.2):2:(0.38) with boxes lc rgb "#1f77b4" title "measured", \
     data using ($0+0.2):3:(0.38) with boxes lc rgb "#bbbbbb" title "floor: raw SQLite txn of 500 (FULL, or NORMAL for NORMAL)", \
     data using ($0-0.2):($2*1.15):(sprintf("%.2fx", $4)) with labels notitle, \
     data using 0:(NaN):xtic(1) notitle
