"""Strategic grams for a new task or model: mine candidates from logged completions, check a list.

    retrain grams mine RUN_OR_CAMPAIGN...   rank word n-grams of emergence/generations.jsonl that mark
                                            correct completions; write a `[planning]` snippet
    retrain grams check CONFIG              sample a few completions with the config's model and task;
                                            report the planning-token fraction the gram list gives

`mine.py` is pure (rows in, ranked grams out), `probe.py` samples through a Backend and measures planning
tokens exactly as a training step does, `cli.py` wires both to the command line.
"""
