# SPDX-License-Identifier: Apache-2.0
# Shared settings of the benchmark plots (loaded by each script). Each script is called as
#   gnuplot -e "data='<tsv>'; out='<png>'" tests/bench/plots/<name>.gp
# and reads TSV files whose first line is a header starting with "# " (a comment to gnuplot).
set terminal pngcairo size 1100,700 font "DejaVu Sans,11" noenhanced
set output out
set datafile separator "\t"
set datafile commentschars "#"
set grid xtics ytics mxtics mytics lc rgb "#dddddd" lw 1
set key top left box opaque
