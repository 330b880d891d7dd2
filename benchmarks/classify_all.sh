#!/bin/sh
# Every table of docs/benchmarks.md's "Classifier" section in one run (about 12 minutes on 2 cores):
#   flock /work/signals/bench.lock sh benchmarks/classify_all.sh > classify-bench.txt
set -e
PY=${PYTHON:-python}
$PY benchmarks/classify.py accuracy --seconds 90 --threads 1 --hidden 256 --torch-dropout 0.4 \
    --options "" --options "--hidden-size 256 --pool max --dropout 0.4" | tee /tmp/classify-accuracy.txt
CKPT=$(sed -n 's/^charrnn classify train (defaults): checkpoint //p' /tmp/classify-accuracy.txt)
$PY benchmarks/classify.py speed --rounds 3 --seconds 6 --threads 1
$PY benchmarks/classify.py predict --rounds 3 --threads 1 --checkpoint "$CKPT"
$PY benchmarks/classify.py speed --rounds 2 --seconds 6 --threads 2 --cells lstm
$PY benchmarks/classify.py predict --rounds 2 --threads 2 --cells lstm
