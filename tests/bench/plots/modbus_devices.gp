# SPDX-License-Identifier: Apache-2.0
# Modbus device sweep (tests/bench/daemon/run_sweep.sh), reduced by scripts/bench to the columns
# 1 devices, 2 points/s polled, 3 daemon CPU %, 4 RSS MiB, 5 points/s expected (devices x points at
# 1 s), 6 poll lateness p99 ms, 7 missed deadlines.
load dir.'common.gp'
set multiplot layout 1,2 title "iotmp-gatewayd polling N Modbus TCP devices (fast local server), 1 s interval"
set logscale x 10
set xlabel "Modbus TCP devices (one connection each)"
set logscale y 10
set format y "%.0s%c"
set ylabel "points per second (log scale)"
set title "Points polled per second"
plot data using 1:5 with lines lw 1 dt 2 lc rgb "#888888" title "expected (devices x points / s)", \
     data using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "polled (counted at the server)"
unset logscale y
set format y "%g"
set title "Daemon CPU and memory"
set ylabel "CPU (% of one core)"
set y2label "RSS (MiB)"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
plot data using 1:3 with linespoints lw 2 pt 7 lc rgb "#2ca02c" title "CPU % (left)", \
     data using 1:4 axes x1y2 with linespoints lw 2 pt 5 lc rgb "#9467bd" title "RSS MiB (right)"
unset multiplot
