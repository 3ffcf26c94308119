"""tensorflow-datasets builders written as ArrayRecord and read back without TensorFlow."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from metareason.data import (ChampBuilder, DataError, ManualBuilder, RecordsBuilder, RecordsConfig, RecordSource,
                             build_and_load, load_prepared, make_record)

tfds.disable_progress_bar()

TOY = {
    "train": [
        make_record(id="t0", source="toy", family="arith", question="Σ_{k=1}^{3} k = ?  (ünïcödé 😀)", answer="6",
                    trajectory="1 + 2 = 3\nwait, 3 + 3 = 6", style="long", generations=["g0", "ĝ1 ✓", ""],
                    difficulty=2),
        make_record(id="t1", question="no extras", answer="0"),  # empty trajectory, style, generations; -1
        make_record(id="t2", source="toy", family="x" * 3000, question="q" * 20000, answer="a", trajectory="t" * 50000,
                    generations=["long " * 4000], difficulty=0),
    ],
    "validation": [],  # empty: left out
    "test": [make_record(id="only", question="?", answer="!", generations=[])],
}


class ToyBuilder(RecordsBuilder, skip_registration=True):
    """Toy records for the tests."""

    SPLITS = ("train", "validation", "test")
    calls = []

    def _records(self, split):
        type(self).calls.append(split)
        scale = self.params or 1
        for r in TOY[split]:
            yield {**r, "difficulty": r["difficulty"] if r["difficulty"] < 0 else r["difficulty"] * scale}


def test_round_trip_every_field_and_idempotent_build(tmp_path):
    ToyBuilder.calls.clear()
    sources = build_and_load(ToyBuilder(data_dir=tmp_path))
    assert set(sources) == {"train", "test"}  # the empty split is left out
    assert all(isinstance(s, RecordSource) for s in sources.values())
    for split, source in sources.items():
        assert len(source) == len(TOY[split])
        assert [source[i] for i in range(len(source))] == TOY[split]  # same order, every field, str types
        assert list(source) == TOY[split]
    assert sources["train"][-1] == TOY["train"][-1]
    with pytest.raises(IndexError):
        sources["test"][1]
    assert sorted(ToyBuilder.calls) == ["test", "train", "validation"]

    ToyBuilder.calls.clear()
    again = build_and_load(ToyBuilder(data_dir=tmp_path))  # already on disk: nothing regenerated
    assert ToyBuilder.calls == [] and list(again["train"]) == TOY["train"]
    assert list(load_prepared(tmp_path / "toy_builder" / "1.0.0")["test"]) == TOY["test"]
    files = sorted(p.name for p in (tmp_path / "toy_builder" / "1.0.0").iterdir())
    assert any(f.startswith("toy_builder-train.array_record") for f in files), files


def test_configs_do_not_collide(tmp_path):
    one, three = RecordsConfig.of(("scale", 1), prefix="toy"), RecordsConfig.of(("scale", 3), prefix="toy")
    assert one.name != three.name and one.name.startswith("toy_")
    a = ToyBuilder(data_dir=tmp_path, config=RecordsConfig.of(1, prefix="toy"))
    b = ToyBuilder(data_dir=tmp_path, config=RecordsConfig.of(3, prefix="toy"))
    assert a.params == 1 and b.params == 3 and a.data_dir != b.data_dir
    da, db = build_and_load(a), build_and_load(b)
    assert da["train"][0]["difficulty"] == 2 and db["train"][0]["difficulty"] == 6
    again = build_and_load(ToyBuilder(data_dir=tmp_path, config=RecordsConfig.of(1, prefix="toy")))
    assert again["train"][0]["difficulty"] == 2


def test_bad_records_fail_the_build(tmp_path):
    class DupBuilder(RecordsBuilder, skip_registration=True):
        SPLITS = ("train",)

        def _records(self, split):
            return [{"id": "same", "question": "q", "answer": "a"}] * 2

    class BadBuilder(RecordsBuilder, skip_registration=True):
        SPLITS = ("train",)

        def _records(self, split):
            return [{"id": "ok", "question": "q", "answer": "a"}, {"id": "bad", "question": "q"}]

    with pytest.raises(DataError, match="dup_builder split 'train': duplicate id 'same'"):
        build_and_load(DupBuilder(data_dir=tmp_path))
    with pytest.raises(DataError, match="bad_builder split 'train' record 1: missing field 'answer'"):
        build_and_load(BadBuilder(data_dir=tmp_path))


def test_manual_builder_jsonl_and_parquet(tmp_path):
    manual = tmp_path / "mydata"
    manual.mkdir()
    rows = [{"question": "Σ?", "answer": "1", "generations": ["a", "b"], "difficulty": 3},
            {"problem": "é?", "answer": "2", "solution": "s"}]
    (manual / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    pq.write_table(pa.Table.from_pylist([{"id": "pq-1", "question": "from parquet", "answer": "3",
                                          "generations": ["x ✓", ""], "difficulty": 1}]), manual / "test.parquet")
    with pytest.raises(DataError, match=r"train\.jsonl, line 3: bad JSON"):
        ManualBuilder(manual, data_dir=tmp_path / "tfds").download_and_prepare()

    builder = ManualBuilder(manual, data_dir=tmp_path / "tfds", skip_bad=True)
    sources = build_and_load(builder)
    assert builder.builder_config.name.startswith("mydata_")
    train = list(sources["train"])
    assert [r["question"] for r in train] == ["Σ?", "é?"]
    assert train[0] == {"id": "train.jsonl:1", "source": "mydata", "family": "", "question": "Σ?", "answer": "1",
                        "trajectory": "", "style": "", "generations": ["a", "b"], "difficulty": 3}
    assert train[1]["trajectory"] == "s" and train[1]["generations"] == []
    assert list(sources["test"]) == [{"id": "pq-1", "source": "mydata", "family": "", "question": "from parquet",
                                      "answer": "3", "trajectory": "", "style": "", "generations": ["x ✓", ""],
                                      "difficulty": 1}]

    # changed files get a new config directory; unchanged ones reuse the old one
    assert ManualBuilder(manual, data_dir=tmp_path / "tfds", skip_bad=True).data_dir == builder.data_dir
    (manual / "train.jsonl").write_text(json.dumps({"question": "new", "answer": "9"}) + "\n")
    rebuilt = ManualBuilder(manual, data_dir=tmp_path / "tfds")
    assert rebuilt.data_dir != builder.data_dir
    assert [r["question"] for r in build_and_load(rebuilt)["train"]] == ["new"]


def test_champ_builder(tmp_path):
    sources = build_and_load(ChampBuilder(data_dir=tmp_path))
    assert list(sources) == ["test"]
    records = list(sources["test"])
    assert len(records) == 270
    assert all(r["answer"].strip() and r["question"].strip() and r["trajectory"].strip() for r in records)
    assert len({r["id"] for r in records}) == 270
    assert {r["family"] for r in records} == {"Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence"}
    assert all(r["source"] == "champ" and r["style"] == "reference" and r["difficulty"] == -1 for r in records)
    first = next(r for r in records if r["id"] == "P_Combinatorics_1")
    assert first["answer"] == "239" and first["question"].startswith("Let a string consist of digit 1, 2, 3.")


def test_imports_stay_light_and_tensorflow_free(tmp_path):
    code = ("import sys, metareason.model\n"
            "assert not [m for m in ('tensorflow_datasets', 'grain', 'tensorflow') if m in sys.modules]\n"
            "import tensorflow_datasets as tfds\n"
            "tfds.disable_progress_bar()\n"
            "from metareason.data import ChampBuilder, build_and_load, training_batches\n"
            f"s = build_and_load(ChampBuilder(data_dir={str(tmp_path)!r}))\n"
            "enc = lambda r: {'tokens': [1, 2, 3], 'loss_mask': [0, 1, 1]}\n"
            "next(iter(training_batches(s['test'], enc, seq_len=8, batch_size=2, seed=0)))\n"
            "print('TF', 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "TF False"
