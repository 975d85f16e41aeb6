"""Counts Petastorm epochs that end early, with Petastorm's own end-of-epoch check or with the harness's fix.

Run as `python tests/petastorm_race.py DATASET_DIR EPOCHS fixed|original` in a fresh process (the fix patches
Petastorm's thread pool for the whole process). The ventilator thread is slowed by 10 ms at its start: that only
widens the window in which the race happens (it also happens without the delay, about 1 epoch in 150 here).
Prints one JSON line: {"short_epochs": N, "rows": [rows per epoch]}.
"""
import json
import sys
import time


def main(dataset: str, epochs: int, mode: str) -> None:
    from petastorm import make_batch_reader
    from petastorm.workers_pool import ventilator

    if mode == "fixed":
        from harness.feeders.petastorm import _fix_end_of_epoch_race

        _fix_end_of_epoch_race()
    start = ventilator.ConcurrentVentilator._ventilate

    def slow_start(self):
        time.sleep(0.01)
        return start(self)

    ventilator.ConcurrentVentilator._ventilate = slow_start
    rows = []
    for _ in range(epochs):
        with make_batch_reader(dataset, num_epochs=1, workers_count=2, reader_pool_type="thread") as reader:
            rows.append(sum(len(batch.label) for batch in reader))
    expected = max(rows)
    print(json.dumps({"short_epochs": sum(r < expected for r in rows), "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
