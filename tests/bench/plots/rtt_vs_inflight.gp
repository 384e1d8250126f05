# SPDX-License-Identifier: Apache-2.0
# RUN round trip through the test broker vs calls in flight, beside the loopback TCP echo floor at
# the same concurrency (bench_session, session_rtt.tsv). Columns: 1 inflight, 2 calls/s, 3 p50 us,
# 4 p99 us, 5 p99.9 us, 6 errors, 7 gateway us/call, 8 floor round trips/s, 9-11 floor p50/p99/p99.9.
load dir.'common.gp'
set multiplot layout 1,2 title "RUN through the test broker to a no-op resource vs calls in flight (dashed: loopback TCP echo floor, same concurrency)"
set logscale x 2
set xlabel "calls in flight (one HTTP keep-alive connection each)"
set logscale y 10
set format y "%g"
set ylabel "round trip (µs, log scale)"
set title "Latency"
plot data using 1:3 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "RUN p50", \
     data using 1:4 with linespoints lw 2 pt 5 lc rgb "#ff7f0e" title "RUN p99", \
     data using 1:5 with linespoints lw 2 pt 9 lc rgb "#d62728" title "RUN p99.9", \
     data using 1:9 with linespoints lw 1 dt 2 pt 6 lc rgb "#1f77b4" title "floor p50", \
     data using 1:10 with linespoints lw 1 dt 2 pt 4 lc rgb "#ff7f0e" title "floor p99"
set title "Throughput"
set ylabel "completed per second (log scale)"
set key bottom right
plot data using 1:2 with linespoints lw 2 pt 7 lc rgb "#2ca02c" title "RUN calls/s", \
     data using 1:8 with linespoints lw 1 dt 2 pt 6 lc rgb "#2ca02c" title "floor round trips/s"
unset multiplot
