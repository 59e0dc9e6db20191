#!/usr/bin/env bash
# delrec+hint at 8,000 passes with the before-targets hint teacher, hint_k 5 and 20 (the teacher's full ranking
# of the 20 candidates), reusing the fusion run's teachers, candidate files and stage-1 prompt (hard links).
cd "$(dirname "$0")/../../../.." && . .venv/bin/activate
for k in 5 20; do
  out=runs/ml100k-hint-k$k
  mkdir -p $out
  for d in teacher candidates stage1; do [ -e $out/$d ] || cp -al runs/ml100k-fusion/$d $out/$d; done
  cmd="delrec run --config configs/ml-100k.yaml --data-dir ${DELREC_DATA:?set DELREC_DATA}/ml-100k --out $out --set eval.methods=[popularity,teachers] --set eval.teacher_hint=true --set eval.hint_k=$k --set stage2.steps=1000 --set eval.fusion=true"
  echo "$cmd" > $out.cmd
  OMP_NUM_THREADS=2 $cmd > $out.out 2> $out.err
  echo "rc=$?" >> $out.out
done
