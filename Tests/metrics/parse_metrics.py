"""Parses snapcrond's /metrics with the reference Python client's parser (prometheus_client, test-only).

Reads the exposition on stdin and prints one JSON object: {family: {"type": ..., "samples": [[name, labels, value]]}}.
Exits 1 with the parser's message when the text is not valid Prometheus text format.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = {}
        for family in text_string_to_metric_families(text):
            families[family.name] = {
                "type": family.type,
                "help": family.documentation,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
    except Exception as error:  # the parser raises ValueError and friends on bad input
        print(f"not valid Prometheus text: {error!r}", file=sys.stderr)
        sys.exit(1)
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
