"""What the gate knows about individual programs, as plain tables.

Rules talk about *what a command does* (reads a file, connects to a host, executes downloaded
code); turning an argv into those facts needs per-program knowledge: which options take a value
(so ``curl -o out.json URL`` does not mistake ``out.json`` for a host), which programs are
wrappers around another command (``sudo``, ``env``, ``timeout``...), which run code, which write
their last argument. Keeping it here, as data, keeps :mod:`.commands` about the mechanics.
"""

from __future__ import annotations

import re
from functools import lru_cache

SHELLS = frozenset(
    {"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh", "fish", "tcsh", "csh", "rbash"}
)
INTERPRETER_RE = re.compile(
    r"^(?:python[0-9.]*|pypy[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*|lua[0-9.]*|"
    r"luajit|deno|bun|pwsh|powershell|osascript|tclsh|rscript|jshell|groovy|awk|gawk|mawk)$"
)
EVALUATORS = frozenset({"eval", "source", "."})
CODE_FLAGS = frozenset(
    {
        "-c",
        "-e",
        "-E",
        "-r",
        "-p",
        "--eval",
        "--print",
        "--command",
        "-command",
        "-encodedcommand",
        "-ec",
    }
)
DOWNLOADERS = frozenset(
    {
        "curl",
        "wget",
        "fetch",
        "aria2c",
        "http",
        "https",
        "httpie",
        "xh",
        "lwp-download",
        "lwp-request",
        "GET",
        "POST",
    }
)
SOCKET_TOOLS = frozenset({"nc", "ncat", "netcat", "telnet", "socat", "openssl", "cryptcat"})
REMOTE_SHELLS = frozenset({"ssh", "sftp", "mosh", "autossh", "sshpass"})
DNS_TOOLS = frozenset({"dig", "nslookup", "host", "drill", "kdig", "delv"})
DNS_TYPES = frozenset(
    {
        "A",
        "AAAA",
        "MX",
        "TXT",
        "NS",
        "CNAME",
        "SOA",
        "PTR",
        "SRV",
        "ANY",
        "CAA",
        "DS",
        "DNSKEY",
        "IN",
        "CH",
    }
)
REMOTE_COPIES = frozenset({"scp", "rsync"})
TEXT_PROGRAMS = frozenset(
    {
        "echo",
        "printf",
        "true",
        "false",
        "expr",
        "seq",
        "sleep",
        "date",
        "basename",
        "dirname",
        "which",
        "type",
        "whoami",
        "id",
        "hostname",
        "uname",
        "alias",
        "let",
        "declare",
        "local",
        "read",
        "exit",
        "return",
        "shift",
        "set",
        "unset",
        "jq",
        "yq",
    }
)
PATTERN_FIRST = frozenset(
    {"grep", "egrep", "fgrep", "rg", "ag", "ack", "sed", "awk", "gawk", "mawk", "git-grep"}
)
LIST_PROGRAMS = frozenset(
    {
        "ls",
        "tree",
        "find",
        "stat",
        "du",
        "file",
        "test",
        "[",
        "[[",
        "realpath",
        "readlink",
        "exa",
        "eza",
        "fd",
        "lsattr",
        "dir",
    }
)
WRITE_ALL = frozenset(
    {
        "tee",
        "touch",
        "truncate",
        "mkdir",
        "rmdir",
        "rm",
        "shred",
        "chmod",
        "mv",
        "chown",
        "chgrp",
        "unlink",
        "setfacl",
        "chattr",
        "crontab",
    }
)
WRITE_LAST = frozenset({"cp", "install", "ln", "rsync", "scp", "ditto"})
DECODERS = frozenset(
    {"base64", "base32", "basenc", "xxd", "openssl", "uudecode", "gunzip", "zcat", "rev"}
)

# Options that consume the next argument, per program ("*" applies to every program).
VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "curl": frozenset(
        """-o --output -d --data --data-raw --data-binary --data-urlencode
        --data-ascii -H --header -X --request -u --user -A --user-agent -e --referer -b --cookie
        -c --cookie-jar -F --form -T --upload-file -w --write-out -m --max-time
        --connect-timeout --retry -K --config -E --cert --key --cacert -r --range -C
        --continue-at -D --dump-header -x --proxy -U --proxy-user --resolve --interface
        --limit-rate -z --time-cond --url --output-dir --json -Y -y --retry-delay
        --retry-max-time --max-filesize --form-string --oauth2-bearer""".split()
    ),
    "wget": frozenset(
        """-O --output-document -o --output-file -a --append-output -P
        --directory-prefix -U --user-agent --header -t --tries -T --timeout --post-data
        --post-file -e --execute --user --password -i --input-file -B --base --load-cookies
        --save-cookies -w --wait -Q --quota -l --level --body-data --body-file
        --method""".split()
    ),
    "ssh": frozenset("-b -c -D -E -e -F -I -i -J -L -l -m -O -o -p -Q -R -S -W -w".split()),
    "scp": frozenset("-c -F -i -J -l -o -P -S".split()),
    "sftp": frozenset("-B -b -c -D -F -i -J -l -o -P -R -S".split()),
    "rsync": frozenset("-e --rsh --exclude --include --filter -f --rsync-path".split()),
    "nc": frozenset("-p -s -w -i -q -x -X -e -c -I -O -T -V -W".split()),
    "ncat": frozenset("-p -s -w -i -x -e -c --exec --sh-exec --lua-exec -o --output".split()),
    "sudo": frozenset("-u -g -C -D -h -p -r -t -U -T --user --group".split()),
    "doas": frozenset({"-u", "-C"}),
    "pkexec": frozenset({"--user"}),
    "su": frozenset({"-s", "--shell", "-g", "--group", "-G", "-w"}),
    "git": frozenset(
        {
            "-C",
            "-c",
            "--git-dir",
            "--work-tree",
            "-m",
            "--message",
            "-F",
            "-b",
            "-B",
            "--branch",
            "-o",
            "--origin",
            "--depth",
            "--author",
            "-X",
        }
    ),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p", "--class", "--classdata"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "xargs": frozenset(
        {
            "-I",
            "-L",
            "-n",
            "-P",
            "-s",
            "-d",
            "-E",
            "-a",
            "--max-args",
            "--max-procs",
            "--delimiter",
            "--arg-file",
            "--replace",
        }
    ),
    "env": frozenset({"-u", "--unset", "-C", "--chdir"}),
    "python": frozenset({"-W", "-X", "-Q"}),
    "grep": frozenset(
        {
            "-e",
            "-f",
            "-m",
            "-A",
            "-B",
            "-C",
            "--include",
            "--exclude",
            "--exclude-dir",
            "--regexp",
            "--file",
            "--max-count",
        }
    ),
    "rg": frozenset(
        {
            "-e",
            "-f",
            "-g",
            "--glob",
            "-t",
            "--type",
            "-T",
            "-m",
            "-A",
            "-B",
            "-C",
            "--regexp",
            "--max-count",
            "-M",
            "--iglob",
        }
    ),
    "sed": frozenset({"-e", "-f", "--expression", "--file"}),
    "awk": frozenset({"-f", "-v", "-F"}),
    "tar": frozenset(
        {
            "-C",
            "--directory",
            "-T",
            "--files-from",
            "-X",
            "--exclude-from",
            "--exclude",
            "-I",
            "--use-compress-program",
        }
    ),
    "watch": frozenset({"-n", "--interval", "-d"}),
    "nsenter": frozenset("-t --target -S --setuid -G --setgid".split()),
    "unshare": frozenset("-S --setuid -G --setgid -R --root -w --wd --propagation".split()),
    "openssl": frozenset(
        {
            "-in",
            "-out",
            "-keyout",
            "-key",
            "-config",
            "-subj",
            "-days",
            "-newkey",
            "-passin",
            "-passout",
            "-CA",
            "-CAkey",
            "-connect",
            "-servername",
            "-name",
            "-inkey",
            "-certfile",
            "-extfile",
        }
    ),
    "find": frozenset(
        {
            "-name",
            "-iname",
            "-path",
            "-ipath",
            "-type",
            "-maxdepth",
            "-mindepth",
            "-newer",
            "-user",
            "-group",
            "-perm",
            "-size",
            "-mtime",
            "-regex",
            "-wholename",
            "-mmin",
            "-printf",
        }
    ),
    "*": frozenset(),
}
OPTION_ALIASES = {"egrep": "grep", "fgrep": "grep", "gawk": "awk", "mawk": "awk", "netcat": "nc"}

# Wrappers run their arguments as a command: (name -> options taking a value).
WRAPPERS = frozenset(
    {
        "sudo",
        "doas",
        "pkexec",
        "env",
        "nohup",
        "nice",
        "ionice",
        "timeout",
        "time",
        "command",
        "exec",
        "builtin",
        "stdbuf",
        "xargs",
        "unbuffer",
        "chroot",
        "setsid",
        "chronic",
        "flock",
        "torsocks",
        "proxychains",
        "proxychains4",
        "strace",
        "ltrace",
        "catchsegv",
        "caffeinate",
        "faketime",
        "runuser",
        "busybox",
        "nsenter",
        "unshare",
    }
)
VISIBLE_WRAPPERS = frozenset({"chroot", "nsenter", "unshare"})
"""Wrappers that are facts themselves (entering the host's namespaces or root): unwrapping
keeps their own argv as a segment besides the command they run."""
ELEVATORS = frozenset({"sudo", "doas", "pkexec", "su", "runuser"})
_POSITIONAL_SKIP = {"timeout": 1, "chroot": 1, "flock": 1, "faketime": 1}
_PYTHON = re.compile(r"^python[0-9.]*$")


@lru_cache(maxsize=4096)
def value_options(name: str) -> frozenset[str]:
    name = OPTION_ALIASES.get(name, name)
    if _PYTHON.match(name):
        name = "python"
    return VALUE_OPTIONS.get(name, VALUE_OPTIONS["*"])


@lru_cache(maxsize=4096)
def is_interpreter(name: str) -> bool:
    return name in SHELLS or name in EVALUATORS or bool(INTERPRETER_RE.match(name))


def positional_skip(name: str) -> int:
    """Positional arguments a wrapper takes before the wrapped command (``timeout 10 cmd``)."""
    return _POSITIONAL_SKIP.get(name, 0)


def is_python(name: str) -> bool:
    return bool(_PYTHON.match(name))
