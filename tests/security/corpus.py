"""Attack inputs shared by the fuzz and attack tests: names and option values meant to escape."""

from __future__ import annotations

#: Volume names that try to leave --root, confuse a shell or a terminal, or collide.
ATTACK_NAMES: list[str] = [
    "..",
    ".",
    "/",
    "../../../../tmp/dv-escape",
    "/etc/passwd",
    "a/../../b",
    "./.",
    "~root",
    "-rf",
    "--help",
    "$(touch /tmp/dv-pwned)",
    "`touch /tmp/dv-pwned`",
    "a;touch /tmp/dv-pwned",
    " ",
    " lead and trail ",
    "name with spaces",
    "\u202eevil\u202c",  # right-to-left override
    "\u200bzero-width",
    "\uff56\uff4f\uff4c",  # fullwidth "vol"
    "v\u043el",  # Cyrillic o
    "caf\u00e9",  # NFC
    "cafe\u0301",  # NFD: another name
    "%2e%2e%2f",
    "..\\..\\windows",
    "a" * 255,
    "\u00e9" * 127 + "a",  # 255 bytes
    "\u00e9" * 128,  # 256 bytes: refused
    "x\x00y",  # refused
    "x\ny",  # refused
    "\x1b[2Jclear",  # refused
    "\ud800",  # lone surrogate: refused
]

#: Option values that try to inject into mount or mkfs command lines or config files.
ATTACK_OPTION_VALUES: list[str] = [
    "0,mode=4777",
    "rw,suid,dev,exec",
    "defaults,x-mount.mkdir",
    "noatime,context=system_u:object_r:shadow_t:s0",
    "--bind=/",
    "-oremount",
    "$(touch /tmp/dv-pwned)",
    "`touch /tmp/dv-pwned`",
    "; touch /tmp/dv-pwned",
    "| touch /tmp/dv-pwned",
    "0\n/dev/sda /mnt ext4",
    "0\x00",
    "1" * 5000,
    "../../etc",
    "-1",
    "99999999999999999999",
    "0o7777",
    "delete;retain",
]
