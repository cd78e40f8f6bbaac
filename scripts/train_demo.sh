#!/usr/bin/env bash
# Rebuild the bundled demo model from nothing: synthesize its data, train it (rerun to resume), ship it,
# and measure it. Every step is idempotent: existing audio is reused, training resumes from
# runs/demo/last.pt and runs/demo2/last.pt, the evaluation resumes from its results.jsonl.
#
#   scripts/train_demo.sh data      # the training, validation and test sets (≈ 10 min on 2 cores)
#   scripts/train_demo.sh train     # train (configs/demo.yaml, two stages), resumable; --threads 1 on a busy machine
#   scripts/train_demo.sh ship      # copy RUN/model.nemo (default runs/demo3: v3) to the package's bundled model
#   scripts/train_demo.sh eval      # v2's WER / language-ID tables (babelcast eval; eval3 gives the README's now)
#   scripts/train_demo.sh streaming # streamed chunk by chunk: streaming metrics, and the same transcripts as eval's
#   scripts/train_demo.sh finetune  # the README's fine-tuning table (pt-BR, left out of training); REPLAY=100 …
#   scripts/train_demo.sh samples   # samples/: one held-out test utterance per trained language
# Demo model v3 (issue 19; configs/demo3.yaml):
#   scripts/train_demo.sh deps3     # Debian's documentation and man-page packages (MBROLA=1: MBROLA voices, non-free)
#   scripts/train_demo.sh data3     # v3 training data and the four v3 test sets in data/demo3 (MBROLA=1 to use them)
#   scripts/train_demo.sh train3    # babelcast train configs/demo3.yaml from v2 (FROM= another .nemo, CONFIG= another
#                                   # config: v4 is CONFIG=configs/demo4.yaml FROM=runs/demo3/model.nemo, v5
#                                   # CONFIG=configs/demo5.yaml FROM=runs/demo4/model.nemo, v6 demo6.yaml from
#                                   # runs/demo5, v7 demo7.yaml from runs/demo6, v8 demo8.yaml from the bundled v5);
#                                   # rerun to resume
#   scripts/train_demo.sh eval3     # MODEL (default: the bundled one) on the v2 and v3 test sets, the out-of-domain
#                                   # text and held-out voice sets, and the non-speech check; NAME names the run,
#                                   # THREADS=N sets torch's threads (two evaluations side by side: THREADS=1)
#   scripts/train_demo.sh compare3 RUN...  # the README's before/after table of eval3 runs, a column each (v2 demo3)
set -euo pipefail
cd "$(dirname "$0")/.."
bc=${BABELCAST:-.venv/bin/babelcast}
langs=en-US,de-DE,es-US,it-IT,pl-PL,cs-CZ  # trained; pt-BR is held out for the fine-tuning demo
bundled=src/babelcast/assets/babelcast-demo.nemo

data() {
    # Training voices and sentences only (the test split's are disjoint, see docs/evaluation.md);
    # half clean, half with reverberation / band-limiting / noise, each with its own prosody seed.
    $bc data synth --langs $langs --n 1500 --split train --seed 0 --out data/demo/train_clean
    $bc data synth --langs $langs --n 1500 --split train --seed 1 --augment --out data/demo/train_aug
    $bc data synth --langs $langs --n 30 --split train --seed 99 --out data/demo/val
    $bc data synth --langs pt-BR --n 800 --split train --seed 0 --out data/demo/pt-BR-train
    $bc data synth --langs pt-BR --n 30 --split train --seed 99 --out data/demo/pt-BR-val
    # Held out: test-split sentences spoken by test-split voices.
    $bc data synth --langs $langs --n 50 --split test --seed 0 --out data/demo/test
    $bc data synth --langs pt-BR --n 50 --split test --seed 0 --out data/demo/pt-BR-test
}

doc_packages="installation-guide-amd64 debian-handbook debian-faq debian-faq-de debian-faq-it debian-reference-en
              debian-reference-de debian-reference-es debian-reference-it gnome-user-docs
              manpages manpages-de manpages-es manpages-it manpages-pl manpages-cs"
mbrola_packages="mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 mbrola-de1 mbrola-de2 mbrola-de3 mbrola-de4 mbrola-de5
                 mbrola-de6 mbrola-de7 mbrola-de8 mbrola-es1 mbrola-es2 mbrola-es3 mbrola-es4 mbrola-mx1 mbrola-mx2
                 mbrola-it1 mbrola-it2 mbrola-it3 mbrola-it4 mbrola-pl1 mbrola-cz1 mbrola-cz2"

deps3() {
    # The documentation (training text) and man pages (the out-of-domain test set's only source), ~180 MB.
    # Festival and its English, Italian and Czech voices (Debian main, free): a second synthesizer; flite (Debian
    # main, free; English voices built in): a third.
    # MBROLA=1: MBROLA and its voices, from Debian's contrib and non-free sections (enabled in a file of
    # their own); their licence allows non-commercial use only, so they are opt-in.
    packages="$doc_packages $(.venv/bin/python -c 'from babelcast.data.voices import ENGINE_PACKAGES as p; print(*p.values())')"
    if [ "${MBROLA:-0}" = 1 ]; then
        echo "Types: deb
URIs: http://deb.debian.org/debian
Suites: $(. /etc/os-release && echo "$VERSION_CODENAME")
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" > /etc/apt/sources.list.d/babelcast-mbrola.sources
        packages="$packages $mbrola_packages"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
}

data3() {
    # Training: fortunes and documentation (train-split sentences), the wide voice pool (train-split
    # variants of every espeak-ng accent but the held-out ones; MBROLA's where installed and MBROLA=1),
    # half clean, half augmented; clips without speech with empty transcripts (about 4 % of the utterances).
    data  # data/demo's sets (reused when present): v3 trains on them too, and validates on data/demo/val
    mb=""; [ "${MBROLA:-0}" = 1 ] && mb=--mbrola
    $bc data synth --langs $langs --n 3000 --split train --wide $mb --texts fortunes,docs --seed 10 --out data/demo3/train_clean
    $bc data synth --langs $langs --n 3000 --split train --wide $mb --texts fortunes,docs --seed 11 --augment \
        --out data/demo3/train_aug
    $bc data nonspeech --langs $langs --n 2400 --split train --seed 10 --out data/demo3/nonspeech_train
    # Held out. In-domain: test-split sentences of both corpora, test voices (data/demo/test stays the v2 table's).
    $bc data synth --langs $langs --n 50 --split test --texts fortunes,docs --seed 0 --out data/demo3/test
    # Out-of-domain text: man-page sentences (no training corpus has them), test voices.
    $bc data synth --langs $langs --n 50 --split test --texts manpages --seed 0 --out data/demo3/test-ood
    # Held-out voices: the same kind of sentences as data/demo3/test, spoken by held-out accents, MBROLA
    # voices and variants at rates and pitches outside every training range.
    $bc data synth --langs $langs --n 50 --split voices $mb --texts fortunes,docs --seed 0 --out data/demo3/test-voices
    # Festival (session 15; deps3 installs it), for the languages it speaks (en, it, cs). Training: a quarter
    # of the utterances by its train voices; held out (test-festival): only its held-out voices, one a language.
    $bc data synth --langs en-US,it-IT,cs-CZ --n 2000 --split train --wide --festival --texts fortunes,docs --seed 20 \
        --out data/demo3/train_festival
    $bc data synth --langs en-US,it-IT,cs-CZ --n 50 --split voices --festival --engine-share 1 --texts fortunes,docs \
        --seed 0 --out data/demo3/test-festival
    # flite (session 17; deps3 installs it), English only: every utterance by its train voices (kal16, awb, rms;
    # slt, the held-out Festival voice's speaker, is held out).
    $bc data synth --langs en-US --n 1000 --split train --wide --flite --engine-share 1 --texts fortunes,docs --seed 30 \
        --out data/demo3/train_flite
    # Non-speech check: 70 clips (ten of each kind), 0.5-8 s.
    $bc data nonspeech --langs $langs --n 70 --split test --seed 0 --out data/demo3/nonspeech-test
}

eval3() {
    # The README's v3 tables for MODEL (default: the bundled model) into runs/eval3/NAME.
    model=${MODEL:-$bundled}
    name=bundled; [ -n "${MODEL:-}" ] && name=$(basename "$(dirname "$MODEL")")
    out=runs/eval3/${NAME:-$name}
    for set in demo/test demo3/test; do
        $bc eval data/$set/manifest.jsonl --model "$model" --latency 80,320,560,1120 --lang-mode both --mode offline \
            --out-dir $out/${set//\//-} --fresh ${THREADS:+--threads $THREADS}
    done
    for set in demo/test demo3/test; do  # the same decodes scored by characters
        $bc eval data/$set/manifest.jsonl --model "$model" --latency 80,1120 --lang-mode given --mode offline \
            --cer-langs ${langs//-[A-Z][A-Z]/} --out-dir $out/${set//\//-}-cer --fresh ${THREADS:+--threads $THREADS}
    done
    for set in test-ood test-voices nonspeech-test test-festival; do
        [ -f data/demo3/$set/manifest.jsonl ] || { echo "eval3: data/demo3/$set not made (scripts/train_demo.sh data3)" >&2; continue; }
        groups=()  # held-out voices: also by rate and pitch (held out below and above the training ranges)
        if [ $set = test-voices ]; then  # and by accent and variant (manifests of data3 since session 15)
            groups=(--group-by rate_wpm:165 --group-by pitch:50)
            if grep -q '"accent"' data/demo3/$set/manifest.jsonl; then groups+=(--group-by accent --group-by variant); fi
        fi
        if [ $set = test-festival ]; then groups=(--group-by accent); fi  # the voice (one a language)
        $bc eval data/demo3/$set/manifest.jsonl --model "$model" --latency 80,1120 --lang-mode both --mode offline \
            --out-dir $out/$set --fresh ${THREADS:+--threads $THREADS} "${groups[@]}"
    done
}

case "${1:-}" in
    data) data ;;
    deps3) deps3 ;;
    data3) data3 ;;
    train3)
        shift
        # Demo model v3: a new warmup + cosine cycle from v2's weights and tokenizer (runs/demo2/model.nemo
        # when stage 2 ran here, else the bundled model: v2 until v3 is shipped; FROM= to choose); resumes
        # from the config's out_dir/last.pt when it exists (then --init-from only has to be the model the run
        # started from: another one is refused, see `babelcast train --no-resume`).
        from=${FROM:-runs/demo2/model.nemo}; [ -n "${FROM:-}" ] || [ -f "$from" ] || from=$bundled
        $bc train "${CONFIG:-configs/demo3.yaml}" --init-from "$from" "$@" ;;
    eval3) eval3 ;;
    compare3)
        # The README's before/after table: the eval3 runs named in the arguments (default: v2 demo3), one
        # column each, averages of the six languages per set, language mode and latency; language ID;
        # non-empty non-speech clips.
        shift; [ $# -gt 0 ] || set -- v2 demo3
        .venv/bin/python - "$@" <<'PY'
import json, sys
from pathlib import Path
runs = sys.argv[1:]
sets = [("demo-test", "v2 test set (data/demo/test), WER"), ("demo3-test", "v3 test set (data/demo3/test), WER"),
        ("test-ood", "out-of-domain text (man pages), WER"), ("test-voices", "held-out voices, WER"),
        ("test-festival", "Festival's held-out voices (en, it, cs), WER"),
        ("demo-test-cer", "v2 test set, CER"), ("demo3-test-cer", "v3 test set, CER")]
summary = {(run, name): json.loads(path.read_text(encoding="utf-8"))
           for run in runs for name, _ in sets + [("nonspeech-test", "")]
           if (path := Path("runs/eval3") / run / name / "summary.json").is_file()}


def rows(name: str, table: str):
    """Per (language mode, latency) of the first run that has the set: that row of each run's summary table
    ({} for a run without the set, printed n/a)."""
    first = next((summary[(run, name)] for run in runs if (run, name) in summary), {table: []})
    for row in first[table]:
        key = (row["lang_mode"], row["latency_ms"])
        yield key, row, [next((r for r in summary.get((run, name), {table: []})[table]
                               if (r["lang_mode"], r["latency_ms"]) == key), {}) for run in runs]


def fmt(value, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


print(f"| Average of the six languages | {' | '.join(runs)} |\n|---|" + "---:|" * len(runs))
for name, title in sets:
    for (mode, latency), _, values in rows(name, "averages"):
        print(f"| {title}, language {mode}, {latency} ms | " + " | ".join(fmt(v.get("error_rate_pct")) for v in values)
              + " |")
        if mode == "auto":
            print(f"| {title.rsplit(',', 1)[0]}, language-ID accuracy %, {latency} ms | "
                  + " | ".join(fmt(v.get("lid_accuracy_pct")) for v in values) + " |")
for (mode, latency), row, values in rows("nonspeech-test", "nonspeech"):
    print(f"| non-speech clips with a transcript (of {row['clips']}), language {mode}, {latency} ms | "
          + " | ".join(fmt(v.get("non_empty"), "d") for v in values) + " |")
PY
        ;;
    train)
        shift
        # Stage 1 (session 5): 3,400 steps from scratch into runs/demo.
        $bc train configs/demo.yaml "$@"
        # Stage 2 (session 6): a second warmup + cosine cycle of 4,400 steps from stage 1's model, with a
        # fresh AdamW and fresh CTC / phoneme heads (--init-from keeps only what the .nemo holds).
        # Each stage resumes from its own last.pt; a finished stage only re-exports its model.
        $bc train configs/demo.yaml --init-from runs/demo/model.nemo --out-dir runs/demo2 --max-steps 4400 "$@" ;;
    ship) run=${RUN:-runs/demo3}; mkdir -p "$(dirname $bundled)" && cp $run/model.nemo $bundled && ls -l $bundled ;;
    eval)
        # Offline mode at each latency gives the streaming tokens (tests/test_streaming_equals_offline.py)
        # in a fraction of the time.
        $bc eval data/demo/test/manifest.jsonl --model $bundled --latency 80,320,560,1120 \
            --lang-mode both --mode offline --out-dir runs/demo-eval --fresh
        # The same decodes scored by characters, to show how near the misspelt words are.
        $bc eval data/demo/test/manifest.jsonl --model $bundled --latency 80,1120 --lang-mode given \
            --mode offline --cer-langs ${langs//-[A-Z][A-Z]/} --out-dir runs/demo-eval-cer --fresh ;;
    streaming)
        # The first 10 test utterances per language streamed chunk by chunk at 80 and 1120 ms, with the
        # streaming metrics; then the count of transcripts equal to the offline ones of the eval run in
        # OFFLINE (default runs/demo-eval: run eval first; or eval3's runs/eval3/NAME/demo-test).
        $bc eval data/demo/test/manifest.jsonl --model $bundled --latency 80,1120 --lang-mode given \
            --mode streaming --max-per-lang 10 --out-dir runs/demo-eval-streaming --fresh
        .venv/bin/python - <<'PY'
import json, os
key = lambda r: (r["utt"], r["lang_mode"], r["latency_ms"])
folder = os.environ.get("OFFLINE", "runs/demo-eval")
offline = {key(r): r["hypothesis"] for r in map(json.loads, open(f"{folder}/results.jsonl", encoding="utf-8"))}
streamed = [json.loads(line) for line in open("runs/demo-eval-streaming/results.jsonl", encoding="utf-8")]
same = sum(offline[key(r)] == r["hypothesis"] for r in streamed)
print(f"streaming == offline: {same} of {len(streamed)} transcripts")
PY
        ;;
    finetune)
        # pt-BR has a prompt slot and tokenizer pieces but no training audio. Fine-tune on 800 pt-BR
        # utterances plus REPLAY (default 300) per trained language, so the others are not forgotten,
        # then score pt-BR and the trained languages at 80 ms, language given, before and after.
        export REPLAY=${REPLAY:-300}
        ft=runs/ft/replay-$REPLAY
        .venv/bin/python - <<'PY'
import json, os
from pathlib import Path
per_lang, rows = {}, []
for line in open("data/demo/train_clean/manifest.jsonl", encoding="utf-8"):
    row = json.loads(line)
    if per_lang.setdefault(row["lang"], 0) < int(os.environ["REPLAY"]):
        per_lang[row["lang"]] += 1
        rows.append({**row, "audio_filepath": "../train_clean/" + row["audio_filepath"]})
folder = Path(f"data/demo/replay-{os.environ['REPLAY']}")
folder.mkdir(parents=True, exist_ok=True)
(folder / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
PY
        score() {  # $1 model, $2 run folder
            $bc eval data/demo/pt-BR-test/manifest.jsonl data/demo/test/manifest.jsonl --model "$1" --latency 80 \
                --lang-mode given --mode offline \
                --out-dir "$2" --fresh
        }
        score $bundled runs/ft/before
        # Always a fresh run (5 min): $ft may hold a run of a model shipped before this one, which would not resume.
        $bc finetune --model $bundled --train data/demo/pt-BR-train/manifest.jsonl \
            --train data/demo/replay-$REPLAY/manifest.jsonl --val data/demo/pt-BR-val/manifest.jsonl \
            --out $ft/demo-pt-BR.nemo --steps 300 --lr 5e-4 --batch-duration 64 --precision bf16 \
            --joint-chunk 0 --val-latency 80 --no-resume
        score $ft/demo-pt-BR.nemo $ft/after ;;
    samples)  # test-split sentences and voices, never trained on; references in samples/manifest.jsonl
        .venv/bin/python - <<'PY'
import json, shutil
from pathlib import Path
chosen = {"en-US": 6, "de-DE": 32, "es-US": 21, "it-IT": 0, "pl-PL": 1, "cs-CZ": 5}
rows = [json.loads(line) for line in open("data/demo/test/manifest.jsonl", encoding="utf-8")]
out = Path("samples")
out.mkdir(exist_ok=True)
with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
    for lang, index in chosen.items():
        row = next(r for r in rows if r["lang"] == lang and f"_{index:06d}_" in r["audio_filepath"])
        name = f"{lang}.wav"
        shutil.copyfile(Path("data/demo/test") / row["audio_filepath"], out / name)
        keep = {k: row[k] for k in ("duration", "text", "target_lang", "lang", "voice")}
        f.write(json.dumps({"audio_filepath": name, **keep}, ensure_ascii=False) + "\n")
PY
        ;;
    *) echo "usage: $0 data|train|ship|eval|streaming|finetune|samples|deps3|data3|train3|eval3|compare3" >&2; exit 2 ;;
esac
