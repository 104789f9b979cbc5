"""Speed and memory tables: plain timm vs FDConv (same as ``fdconv-zoo bench``)."""

import sys

from fdconv_zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
