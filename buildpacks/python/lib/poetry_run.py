"""Runs Poetry (python poetry_run.py ARGS... with the tool venv's python).

Poetry finds the files of a PyPI package through PyPI's per-release JSON API
(/pypi/NAME/VERSION/json). Some PyPI mirrors and caching proxies serve only
the simple index (PEP 503/691), and Poetry then finds no file to install
("Unable to find installation candidates"). Where that API answers nothing,
the files are taken from the simple index instead: the same files, checked
against the same hashes from poetry.lock. Where it answers, nothing changes.
If Poetry's internals differ from what this expects, Poetry runs unchanged.
"""
import sys


def allow_simple_index_files():
    try:
        from poetry.repositories.pypi_repository import PyPiRepository
    except Exception:
        return
    original = getattr(PyPiRepository, "find_links_for_package", None)
    if original is None or not hasattr(PyPiRepository, "_get_page"):
        return

    def find_links_for_package(self, package):
        links = original(self, package)
        if links:
            return links
        try:
            page = self._get_page(package.name)
            return list(page.links_for_version(package.name, package.version))
        except Exception:
            return links

    PyPiRepository.find_links_for_package = find_links_for_package


if __name__ == "__main__":
    allow_simple_index_files()
    from poetry.console.application import main

    sys.argv[0] = "poetry"
    sys.exit(main())
