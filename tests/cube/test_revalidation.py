"""The ETags of the REST service's answers (:mod:`cube.revalidation`): what makes an answer, the code included."""

from __future__ import annotations


def test_an_etag_names_the_code_that_made_the_answer(tmp_path):
    """The ETag named the code by its package version, "0.1.0" through every fix: after an upgrade that changed an
    answer, clients kept the old one with 304s. It names a digest of the code's files now."""
    import pathlib
    import shutil

    import cube
    from cube.revalidation import answer_identity, code_digest, files_digest

    copy = pathlib.Path(shutil.copytree(pathlib.Path(cube.__file__).parent, tmp_path / "cube",
                                        ignore=shutil.ignore_patterns("__pycache__")))
    before = files_digest([copy])
    assert files_digest([copy]) == before
    (copy / "stats.py").write_text((copy / "stats.py").read_text() + "\n# a fix\n")
    assert files_digest([copy]) != before
    assert answer_identity(None).startswith(code_digest())
