"""Text similarity as report-generation papers compute it: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

The scorers are the reference implementations of the COCO caption evaluation
(``pycocoevalcap``): BLEU (Papineni et al. 2002; corpus level, closest reference length),
METEOR 1.5 (Denkowski and Lavie 2014; the Java jar shipped in the package), ROUGE-L (Lin 2004;
LCS F-measure with beta 1.2, averaged over reports) and CIDEr-D style CIDEr (Vedantam et al.
2015; document frequencies from the reference corpus itself). This is what R2Gen
(Chen et al. 2020) and its successors call in ``compute_scores``.

Text is prepared before scoring with one of:

- ``"r2gen"`` (default): R2Gen's report cleaning (lower case, punctuation removed, sentences
  joined with ``" . "``), reproduced from its ``clean_report_iu_xray``; this is what published
  IU X-Ray and MIMIC-CXR numbers use. With an :class:`R2GenVocabulary` the text is also read
  as R2Gen's decoder reads it: R2Gen scores references decoded from their token ids, so each
  reference is cut to its first ``max_seq_length - 1`` tokens (60 - 1 = 59 on IU X-Ray: the
  ids are ``[BOS] + tokens + [EOS]`` cut at 60, and decoding starts after BOS) and words seen
  fewer than ``threshold`` times (3 on IU X-Ray) in the cleaned training reports read
  ``<unk>``. Generated reports get the same ``<unk>`` (R2Gen's decoder can only emit its
  vocabulary, and its ``<unk>`` matches a reference's ``<unk>``) but are not cut.
- ``"ptb"``: the Stanford PTB tokenizer of pycocoevalcap (COCO captioning convention; Java).
- ``"none"``: lower case and whitespace only.

METEOR runs a Java process: English with exact, stem, synonym and paraphrase modules as in
pycocoevalcap; Spanish with exact and stem modules only, because the package ships no Spanish
paraphrase table (Spanish METEOR is therefore not comparable with English METEOR). Without Java,
METEOR is reported as missing rather than guessed.

:class:`NLGCorpus` prepares a corpus once (tokenized, n-grams counted, METEOR statistics taken)
and recomputes every corpus-level score on any resample of it, for bootstrap intervals
(:func:`nlg_intervals`): BLEU from the summed n-gram counts and lengths, CIDEr with document
frequencies of the drawn corpus, ROUGE-L as the mean over the drawn reports, METEOR by the jar's
own aggregation of the drawn reports' statistics.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from training.exceptions import MetricError
from training.metrics.bootstrap import Interval, Resampler, bootstrap_ci

logger = logging.getLogger(__name__)

TOKENIZERS: tuple[str, ...] = ("r2gen", "ptb", "none")
EMPTY_TOKEN = "emptyreportplaceholder"
METRIC_NAMES: tuple[str, ...] = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"
)

# R2Gen's sentence cleaner, character class kept verbatim (":-\[" is a range in it).
_R2GEN_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def clean_report_r2gen(report: str) -> str:
    """R2Gen's ``clean_report_iu_xray``: the text the published IU X-Ray scores are computed on.

    Faithful to the original, quirks included: its filter of empty sentences compares a string
    with a list and so keeps them (``"a. . b"`` gives ``"a .  . b ."``).
    """
    text = report
    for old, new in (
        ("..", "."), ("..", "."), ("..", "."), ("1. ", ""), (". 2. ", ". "), (". 3. ", ". "),
        (". 4. ", ". "), (". 5. ", ". "), (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "),
        (" 5. ", ". "),
    ):
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")

    def clean(sentence: str) -> str:
        s = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "")
        return _R2GEN_STRIP.sub("", s.strip().lower())

    tokens = [clean(s) for s in sentences]
    return " . ".join(tokens) + " ."


class R2GenVocabulary:
    """R2Gen's word vocabulary and reference length (``modules/tokenizers.py`` and
    ``modules/datasets.py`` of R2Gen): what its references look like once decoded from ids.

    ``words`` are the tokens seen at least ``threshold`` times in the cleaned training reports
    (:meth:`from_reports`); ``max_seq_length`` counts BOS, as R2Gen's ``--max_seq_length`` does.
    """

    UNK = "<unk>"

    def __init__(self, words: frozenset[str], threshold: int, max_seq_length: int) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must be at least 2, got {max_seq_length}")
        self.words = words
        self.threshold = threshold
        self.max_seq_length = max_seq_length

    @classmethod
    def from_reports(cls, reports: Sequence[str], threshold: int = 3,
                     max_seq_length: int = 60) -> R2GenVocabulary:
        """The vocabulary of the training ``reports`` (raw text; cleaned here as R2Gen does)."""
        counts: dict[str, int] = {}
        for report in reports:
            for token in clean_report_r2gen(report).split():
                counts[token] = counts.get(token, 0) + 1
        return cls(frozenset(t for t, n in counts.items() if n >= threshold), threshold,
                   max_seq_length)

    @property
    def max_reference_tokens(self) -> int:
        """Tokens a decoded reference keeps: the ids are cut at ``max_seq_length`` with BOS."""
        return self.max_seq_length - 1

    def hypothesis(self, cleaned: str) -> str:
        """A cleaned generated report with the words outside the vocabulary as ``<unk>``."""
        return " ".join(t if t in self.words else self.UNK for t in cleaned.split())

    def reference(self, cleaned: str) -> str:
        """A cleaned reference as R2Gen decodes it: ``<unk>`` and cut."""
        return " ".join(self.hypothesis(cleaned).split()[: self.max_reference_tokens])

    def describe(self) -> dict[str, int]:
        return {"threshold": self.threshold, "max_seq_length": self.max_seq_length,
                "max_reference_tokens": self.max_reference_tokens,
                "vocabulary_size": len(self.words) + 1}  # with <unk>, as R2Gen counts it


def _tokenize(texts: Mapping[str, str], tokenizer: str) -> dict[str, list[str]]:
    if tokenizer == "r2gen":
        return {k: [clean_report_r2gen(v)] for k, v in texts.items()}
    if tokenizer == "none":
        return {k: [" ".join(v.lower().split())] for k, v in texts.items()}
    if tokenizer == "ptb":
        if shutil.which("java") is None:
            raise MetricError("the PTB tokenizer needs Java: install a JRE (java on PATH)")
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenized: dict[str, list[str]] = PTBTokenizer().tokenize(
            {k: [{"caption": v}] for k, v in texts.items()}
        )
        return tokenized
    raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")


class MeteorScorer:
    """METEOR 1.5 through the jar shipped with pycocoevalcap, for English or Spanish.

    The protocol (``SCORE`` lines then one ``EVAL`` line) is pycocoevalcap's; only the language
    options differ. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, lang: str = "en") -> None:
        if lang not in ("en", "es"):
            raise ValueError(f"METEOR language must be 'en' or 'es', got {lang!r}")
        if shutil.which("java") is None:
            raise MetricError("METEOR needs Java: install a JRE (java on PATH)")
        import pycocoevalcap.meteor.meteor as meteor_module

        self.lang = lang
        jar_dir = Path(meteor_module.__file__).parent
        cmd = ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", lang, "-norm"]
        if lang == "es":
            cmd += ["-m", "exact stem"]
        self._proc = subprocess.Popen(
            cmd,
            cwd=jar_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        self._lock = threading.Lock()

    def _line(self, text: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{text}\n".encode())
        self._proc.stdin.flush()
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            err = self._proc.stderr.read().decode() if self._proc.stderr else ""
            raise MetricError(f"METEOR stopped unexpectedly: {err.strip()[:500]}")
        return line

    def compute_score(
        self, gts: Mapping[str, list[str]], res: Mapping[str, list[str]]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-report scores, as ``pycocoevalcap.meteor.Meteor`` returns."""
        if gts.keys() != res.keys():
            raise ValueError("references and hypotheses must have the same ids")
        return self.evaluate(self.statistics(gts, res))

    def statistics(
        self, gts: Mapping[str, list[str]], res: Mapping[str, list[str]]
    ) -> list[str]:
        """The jar's sufficient statistics of each report (its ``SCORE`` answers)."""
        with self._lock:
            stats = []
            for key in gts:
                hyp = res[key][0].replace("|||", "").replace("  ", " ")
                refs = " ||| ".join(r.replace("|||", "") for r in gts[key])
                stats.append(self._line(f"SCORE ||| {refs} ||| {hyp}"))
        return stats

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-report scores of a list of statistics (repeats allowed)."""
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            self._proc.stdin.flush()
            scores = [float(self._proc.stdout.readline().strip()) for _ in stats]
            total = float(self._proc.stdout.readline().strip())
        return total, scores

    def close(self) -> None:
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: METEOR 1.5's default parameters for English (alpha, beta, gamma, delta; module weights for
#: exact, stem, synonym, paraphrase), used to aggregate resampled statistics without the jar.
#: Checked against the jar on every corpus before use (see :class:`NLGCorpus`).
METEOR_PARAMETERS: dict[str, tuple[tuple[float, float, float, float], tuple[float, ...]]] = {
    "en": ((0.85, 0.20, 0.60, 0.75), (1.0, 0.6, 0.8, 0.6)),
}


def meteor_aggregate(stats: np.ndarray, lang: str = "en") -> float:
    """Corpus METEOR from summed statistics (the 23 numbers of the jar's ``SCORE`` lines, the
    chunks of perfectly matched segments left out), as Meteor 1.5's ``computeMetrics`` does."""
    (alpha, beta, gamma, delta), weights = METEOR_PARAMETERS[lang]
    test_len, ref_len, test_fn, ref_fn = stats[:4]
    stages = stats[4:20].reshape(4, 4)
    chunks, test_words, ref_words = stats[20:23]
    test_m = sum(w * (delta * stages[i, 0] + (1 - delta) * stages[i, 2])
                 for i, w in enumerate(weights))
    ref_m = sum(w * (delta * stages[i, 1] + (1 - delta) * stages[i, 3])
                for i, w in enumerate(weights))
    test_wl = delta * (test_len - test_fn) + (1 - delta) * test_fn
    ref_wl = delta * (ref_len - ref_fn) + (1 - delta) * ref_fn
    precision = test_m / test_wl if test_wl else 0.0
    recall = ref_m / ref_wl if ref_wl else 0.0
    if precision == 0 or recall == 0:
        return 0.0
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    all_matched = (stages[:, 0].sum() + stages[:, 2].sum() == test_len
                   and stages[:, 1].sum() + stages[:, 3].sum() == ref_len and chunks == 1)
    frag = 0.0 if all_matched else chunks / ((test_words + ref_words) / 2.0)
    return float(fmean * (1 - gamma * frag**beta))


class _Cider:
    """pycocoevalcap's CIDEr (n=4, sigma=6) on cooked counts, vectorized over n-grams so that a
    resampled corpus (document frequencies from the drawn references) is scored in
    milliseconds. With one reference per report, the same arithmetic as ``CiderScorer``."""

    def __init__(self, crefs: list[list[dict[tuple[str, ...], int]]],
                 ctest: list[dict[tuple[str, ...], int]], sigma: float = 6.0) -> None:
        if any(len(r) != 1 for r in crefs):
            raise ValueError("CIDEr here expects exactly one reference per report")
        vocab: dict[tuple[str, ...], int] = {}

        def col(ngram: tuple[str, ...]) -> int:
            return vocab.setdefault(ngram, len(vocab))

        h_row, h_col, h_tf, r_row, r_col, r_tf, m_row, m_col, m_val = ([] for _ in range(9))
        len_h, len_r = [], []
        for i, (refs, test) in enumerate(zip(crefs, ctest, strict=True)):
            ref = refs[0]
            for ngram, tf in test.items():
                h_row.append(i)
                h_col.append(col(ngram))
                h_tf.append(tf)
                if ngram in ref:  # min(vec_hyp, vec_ref) * vec_ref, without the idf factors
                    m_row.append(i)
                    m_col.append(col(ngram))
                    m_val.append(min(tf, ref[ngram]) * ref[ngram])
            for ngram, tf in ref.items():
                r_row.append(i)
                r_col.append(col(ngram))
                r_tf.append(tf)
            # pycocoevalcap's "length" counts bigrams (n == 1 in its 0-based n-gram index).
            len_h.append(sum(tf for g, tf in test.items() if len(g) == 2))
            len_r.append(sum(tf for g, tf in ref.items() if len(g) == 2))
        self.n = len(crefs)
        self.n_cols = len(vocab)
        order = np.zeros(len(vocab), dtype=np.intp)
        for ngram, c in vocab.items():
            order[c] = len(ngram) - 1

        def arrays(rows: list[int], cols: list[int], vals: Sequence[float]) -> tuple[
                np.ndarray, np.ndarray, np.ndarray]:
            r, c = np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)
            return r * 4 + order[c], c, np.array(vals, dtype=np.float64)

        self._h = arrays(h_row, h_col, [t * t for t in h_tf])
        self._r = arrays(r_row, r_col, [t * t for t in r_tf])
        self._m = arrays(m_row, m_col, m_val)
        self._doc_rows = np.array(r_row, dtype=np.intp)
        self._doc_cols = np.array(r_col, dtype=np.intp)
        delta = np.array(len_h, dtype=np.float64) - np.array(len_r, dtype=np.float64)
        self._penalty = np.e ** (-(delta**2) / (2 * sigma**2))

    def score(self, counts: np.ndarray) -> float:
        """Corpus CIDEr of the corpus where report ``i`` appears ``counts[i]`` times."""
        total = counts.sum()
        df = np.bincount(self._doc_cols, weights=counts[self._doc_rows], minlength=self.n_cols)
        idf2 = (np.log(total) - np.log(np.maximum(1.0, df))) ** 2

        def per_order(parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
            key, cols, vals = parts
            return np.bincount(key, weights=vals * idf2[cols], minlength=4 * self.n).reshape(
                self.n, 4)

        norm_h = np.sqrt(per_order(self._h))
        norm_r = np.sqrt(per_order(self._r))
        val = per_order(self._m)
        both = (norm_h != 0) & (norm_r != 0)
        val = np.where(both, val / np.where(both, norm_h * norm_r, 1.0), val)
        each = (val * self._penalty[:, None]).mean(axis=1) * 10.0
        return float((counts * each).sum() / total)


class NLGCorpus:
    """References and hypotheses prepared once, scored on the whole corpus or any resample.

    Use as a context manager (METEOR keeps a Java process), or call :meth:`close`. Pass a
    running ``meteor_scorer`` to share one Java process between corpora (it is not closed here).
    """

    def __init__(
        self,
        references: Sequence[str],
        hypotheses: Sequence[str],
        *,
        lang: str = "en",
        tokenizer: str = "r2gen",
        meteor: bool = True,
        meteor_scorer: MeteorScorer | None = None,
        vocabulary: R2GenVocabulary | None = None,
    ) -> None:
        if vocabulary is not None and tokenizer != "r2gen":
            raise ValueError("an R2Gen vocabulary needs the 'r2gen' tokenizer")
        if len(references) != len(hypotheses):
            raise ValueError(
                f"references and hypotheses differ in length ({len(references)} vs "
                f"{len(hypotheses)})"
            )
        if not references:
            raise ValueError("nothing to score: no reference")
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer
        from pycocoevalcap.cider.cider_scorer import CiderScorer
        from pycocoevalcap.rouge.rouge import Rouge

        self.n = len(references)
        self.lang = lang
        self.tokenizer = tokenizer
        ids = [str(i) for i in range(self.n)]
        gts = _tokenize(dict(zip(ids, references, strict=True)), tokenizer)
        res = _tokenize(dict(zip(ids, hypotheses, strict=True)), tokenizer)
        if vocabulary is not None:
            gts = {k: [vocabulary.reference(v[0])] for k, v in gts.items()}
            res = {k: [vocabulary.hypothesis(v[0])] for k, v in res.items()}
        # pycocoevalcap's ROUGE divides by the hypothesis length; an empty report becomes one
        # token that matches nothing, so it scores (about) 0 instead of crashing or matching ".".
        empty = {k for k, h in zip(ids, hypotheses, strict=True) if not h.strip()}
        res = {k: [EMPTY_TOKEN if k in empty else v[0]] for k, v in res.items()}

        bleu = BleuScorer(n=4)
        cider = CiderScorer(n=4, sigma=6.0)
        rouge = Rouge()
        rouge_each = []
        for key in ids:
            bleu += (res[key][0], gts[key])
            cider += (res[key][0], gts[key])
            rouge_each.append(rouge.calc_score(res[key], gts[key]))
        # BLEU's sufficient statistics per report ("closest" reference length, as Bleu uses).
        self._testlen = np.array([c["testlen"] for c in bleu.ctest], dtype=np.float64)
        self._reflen = np.array(
            [bleu._single_reflen(c["reflen"], "closest", c["testlen"]) for c in bleu.ctest],
            dtype=np.float64,
        )
        self._guess = np.array([c["guess"] for c in bleu.ctest], dtype=np.float64)
        self._correct = np.array([c["correct"] for c in bleu.ctest], dtype=np.float64)
        self._cider = _Cider(list(cider.crefs), list(cider.ctest))
        self._rouge = np.array(rouge_each, dtype=np.float64)
        self._meteor: MeteorScorer | None = None
        self._meteor_stats: list[str] = []
        self._meteor_numbers: np.ndarray | None = None
        self._meteor_total: float | None = None
        self.meteor_error: str | None = None
        self._owns_meteor = meteor_scorer is None
        if meteor:
            try:
                self._meteor = meteor_scorer or MeteorScorer(lang)
                self._meteor_stats = self._meteor.statistics(gts, res)
                self._meteor_total, _ = self._meteor.evaluate(self._meteor_stats)
            except MetricError as exc:
                logger.warning("METEOR not computed: %s", exc)
                self.meteor_error = str(exc)
                self.close()
            else:
                self._meteor_numbers = self._fast_meteor(lang)

    def _fast_meteor(self, lang: str) -> np.ndarray | None:
        """The statistics as numbers when the Python aggregation gives the jar's corpus score
        (then resamples need no Java round trip); ``None`` otherwise."""
        if lang not in METEOR_PARAMETERS or self._meteor_total is None:
            return None
        numbers = np.array([line.split() for line in self._meteor_stats], dtype=np.float64)
        if numbers.ndim != 2 or numbers.shape[1] != 23:
            return None
        # Meteor adds no chunks for a perfectly matched segment (MeteorStats.addStats).
        perfect = ((numbers[:, [4, 6, 8, 10, 12, 14, 16, 18]].sum(axis=1) == numbers[:, 0])
                   & (numbers[:, [5, 7, 9, 11, 13, 15, 17, 19]].sum(axis=1) == numbers[:, 1])
                   & (numbers[:, 20] == 1))
        numbers[perfect, 20] = 0.0
        ours = meteor_aggregate(numbers.sum(axis=0), lang)
        if not math.isclose(ours, self._meteor_total, rel_tol=1e-9, abs_tol=1e-12):
            logger.warning("METEOR: Python aggregation %.12f differs from the jar's %.12f; "
                           "resamples go through the jar", ours, self._meteor_total)
            return None
        return numbers

    def scores(self, indices: np.ndarray | None = None) -> dict[str, float | None]:
        """Corpus scores of the reports at ``indices`` (all when ``None``; repeats allowed)."""
        idx = np.arange(self.n) if indices is None else np.asarray(indices)
        counts = np.bincount(idx, minlength=self.n).astype(np.float64)
        out: dict[str, float | None] = {}
        tiny, small = 1e-15, 1e-9  # BleuScorer's constants
        testlen, reflen = self._testlen[idx].sum(), self._reflen[idx].sum()
        guess, correct = self._guess[idx].sum(axis=0), self._correct[idx].sum(axis=0)
        bleu = 1.0
        ratio = (testlen + tiny) / (reflen + small)
        for k in range(4):
            bleu *= float(correct[k] + tiny) / (guess[k] + small)
            value = bleu ** (1.0 / (k + 1))
            if ratio < 1:
                value *= math.exp(1 - 1 / ratio)
            out[f"BLEU-{k + 1}"] = float(value)
        out["METEOR"] = None
        if indices is None:
            out["METEOR"] = self._meteor_total
        elif self._meteor_numbers is not None:
            out["METEOR"] = meteor_aggregate(counts @ self._meteor_numbers, self.lang)
        elif self._meteor is not None:
            out["METEOR"], _ = self._meteor.evaluate([self._meteor_stats[i] for i in idx])
        out["ROUGE-L"] = float(np.mean(self._rouge[idx]))
        out["CIDEr"] = self._cider.score(counts)
        return out

    def close(self) -> None:
        if self._meteor is not None and self._owns_meteor:
            self._meteor.close()
        self._meteor = None

    def __enter__(self) -> NLGCorpus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def nlg_scores(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    lang: str = "en",
    tokenizer: str = "r2gen",
    meteor: bool = True,
    vocabulary: R2GenVocabulary | None = None,
) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``hypotheses`` against ``references``.

    One reference per hypothesis, in the same order. Returns the corpus scores by name
    (:data:`METRIC_NAMES`); ``METEOR`` is ``None`` when ``meteor=False`` or Java is missing, and
    ``"meteor_error"`` then says why.
    """
    with NLGCorpus(references, hypotheses, lang=lang, tokenizer=tokenizer,
                   meteor=meteor, vocabulary=vocabulary) as corpus:
        out: dict[str, Any] = dict(corpus.scores())
        if corpus.meteor_error:
            out["meteor_error"] = corpus.meteor_error
    out["tokenizer"] = tokenizer
    out["n"] = len(references)
    return out


def nlg_intervals(
    corpus: NLGCorpus, resampler: Resampler, level: float = 0.95
) -> dict[str, Interval]:
    """Bootstrap intervals of every score of ``corpus``, each resample scored as a corpus."""

    def statistic(idx: np.ndarray) -> dict[str, float]:
        return {k: (math.nan if v is None else v) for k, v in corpus.scores(idx).items()}

    intervals = bootstrap_ci(statistic, resampler, level=level)
    return {k: v for k, v in intervals.items() if not math.isnan(v.estimate)}
