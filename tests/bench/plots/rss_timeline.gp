# SPDX-License-Identifier: Apache-2.0
# The daemon over a run with a broker outage (rss_timeline.py, rss_timeline.tsv). Columns: 1 t s,
# 2 RSS MiB, 3 CPU %, 4 fds, 5 queue depth, 6 broker up, 7 delivered, 8 VmHWM MiB, 9 threads.
# Variables: out_start, out_end (seconds) shade the outage.
load dir.'common.gp'
set multiplot layout 2,1 title sprintf("iotmp-gatewayd, %s: broker killed at %g s, restarted at %g s (shaded)", what, out_start, out_end)
set object 1 rect from out_start, graph 0 to out_end, graph 1 fc rgb "#f4e3e3" fs solid 1.0 noborder behind
set xlabel "time since the daemon started (s)"
stats data using 2 nooutput name "R"
set ylabel "RSS (MiB; axis not from 0)"
set y2label "store queue depth (rows)"
set ytics nomirror
set y2tics
set yrange [floor(R_min - 2) : ceil(R_max + 2)]
set y2range [0:*]
set key at graph 0.02, graph 0.8 left top box opaque
plot data using 1:2 with lines lw 2 lc rgb "#1f77b4" title "RSS (MiB, left)", \
     data using 1:8 with lines lw 1 dt 2 lc rgb "#1f77b4" title "peak RSS VmHWM (MiB, left)", \
     data using 1:5 axes x1y2 with lines lw 2 lc rgb "#d62728" title "queue depth (rows, right)"
set yrange [0:*]
set ylabel "CPU (% of one core)"
set y2label "open file descriptors"
plot data using 1:3 with lines lw 1 lc rgb "#2ca02c" title "CPU (% of one core, left)", \
     data using 1:4 axes x1y2 with lines lw 2 lc rgb "#9467bd" title "open fds (right)"
unset multiplot
