"""A reader for the subset of YAML our topology and CI files use (no
PyYAML needed): block mappings, block sequences, flow sequences, plain and
quoted scalars, comments."""
import re


def _scalar(text):
    text = text.strip()
    if text[:1] in "\"'" and text[-1:] == text[:1]:
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(x) for x in re.findall(r'"[^"]*"|\'[^\']*\'|[^,\s][^,]*', text[1:-1])]
    return text


def _lines(text):
    for raw in text.splitlines():
        line = re.sub(r"\s+#.*$", "", raw) if not raw.lstrip().startswith("#") else ""
        if line.strip():
            yield len(line) - len(line.lstrip()), line.strip()


def read_yaml(text):
    """Block mappings, block sequences, flow sequences, plain and quoted
    scalars: the subset a .clab.yml uses (anything else raises)."""
    lines = list(_lines(text))

    def block(i, indent):
        if lines[i][1].startswith("- "):
            out = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                item = lines[i][1][2:]
                if re.match(r"^[\w.-]+:( |$)", item):      # a mapping inside a list item
                    lines[i] = (indent + 2, item)
                    value, i = block(i, indent + 2)
                else:
                    value, i = _scalar(item), i + 1
                out.append(value)
            return out, i
        out = {}
        while i < len(lines) and lines[i][0] == indent:
            m = re.match(r"^([\w.-]+):(?: (.*))?$", lines[i][1])
            assert m, f"not in the YAML subset: {lines[i][1]!r}"
            key, rest = m.group(1), m.group(2)
            assert key not in out, f"duplicate key {key}"
            if rest:
                out[key], i = _scalar(rest), i + 1
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                out[key], i = block(i + 1, lines[i + 1][0])
            else:
                out[key], i = None, i + 1
        return out, i

    value, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed from: {lines[end]}"
    return value


