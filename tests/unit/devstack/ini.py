"""iniset/iniget for the devstack stand-in: ini-style files, case kept, no interpolation."""
import configparser
import os
import sys


def _load(path):
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    if os.path.exists(path):
        parser.read(path)
    return parser


def main(argv):
    action, path, section, option = argv[:4]
    parser = _load(path)
    if action == 'get':
        if parser.has_option(section, option):
            print(parser.get(section, option))
        return 0
    if section != 'DEFAULT' and not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, option, argv[4])
    with open(path, 'w') as f:
        parser.write(f)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
