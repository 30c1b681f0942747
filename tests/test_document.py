import base64

import pandas as pd

from harness.present.document import Bullets, Heading, Image, Table, Text, to_html, to_markdown

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def blocks(tmp_path):
    image = tmp_path / "fig.png"
    image.write_bytes(PNG)
    table = pd.DataFrame({"backend": ["a|b", "<c>"], "time": ["1 ms", None]})
    return [
        Heading("Title", 1),
        Text("uses `code` and **bold** & <tags>"),
        Bullets(("one", "two")),
        Table(table, "caption"),
        Image(image, "a figure"),
    ]


def test_markdown_tables_links_and_escapes(tmp_path):
    md = to_markdown(blocks(tmp_path))
    assert md.startswith("# Title\n")
    assert "- one\n- two" in md
    assert "a\\|b" in md  # a pipe would break the table
    assert "![a figure](fig.png)" in md
    assert "None" not in md and "nan" not in md


def test_html_is_self_contained_and_escaped(tmp_path):
    html = to_html(blocks(tmp_path), "t")
    assert html.count("<img ") == 1
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in html
    assert "fig.png" not in html  # nothing to fetch from beside the file
    assert "<code>code</code>" in html and "<strong>bold</strong>" in html
    assert "&amp; &lt;tags&gt;" in html and "<td>&lt;c&gt;</td>" in html
    assert "<th>backend</th>" in html and "<li>two</li>" in html
