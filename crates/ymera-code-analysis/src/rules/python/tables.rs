//! The Python rules' data: call and import lists (bandit's blacklists, shells, secret prompts).

/// bandit's `shell_injection` lists.
pub(super) const SUBPROCESS: [&str; 5] = [
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "subprocess.run",
];
pub(super) const SHELL: [&str; 14] = [
    "os.system",
    "os.popen",
    "os.popen2",
    "os.popen3",
    "os.popen4",
    "popen2.popen2",
    "popen2.popen3",
    "popen2.popen4",
    "popen2.Popen3",
    "popen2.Popen4",
    "commands.getoutput",
    "commands.getstatusoutput",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
];

/// bandit's `shell_injection` `no_shell` list (B607 looks at these too).
pub(super) const NO_SHELL: [&str; 17] = [
    "os.execl",
    "os.execle",
    "os.execlp",
    "os.execlpe",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.execvpe",
    "os.spawnl",
    "os.spawnle",
    "os.spawnlp",
    "os.spawnlpe",
    "os.spawnv",
    "os.spawnve",
    "os.spawnvp",
    "os.spawnvpe",
    "os.startfile",
];

/// Words of a prompt asking for a secret (PY001).
pub(super) const SECRET_PROMPTS: [&str; 3] = ["password", "passwd", "passphrase"];

/// bandit's blacklisted calls (MEDIUM and HIGH ones), by qualified name.
pub(super) const BLACKLISTED_CALLS: &[(&str, &[&str])] = &[
    (
        "B301",
        &[
            "pickle.loads",
            "pickle.load",
            "pickle.Unpickler",
            "cPickle.loads",
            "cPickle.load",
            "dill.loads",
            "dill.load",
            "dill.Unpickler",
            "shelve.open",
            "shelve.DbfilenameShelf",
            "jsonpickle.decode",
            "jsonpickle.unpickler.decode",
            "jsonpickle.unpickler.Unpickler",
            "pandas.read_pickle",
        ],
    ),
    ("B302", &["marshal.load", "marshal.loads"]),
    (
        "B303",
        &[
            "Crypto.Hash.MD2.new",
            "Crypto.Hash.MD4.new",
            "Crypto.Hash.MD5.new",
            "Crypto.Hash.SHA.new",
            "Cryptodome.Hash.MD2.new",
            "Cryptodome.Hash.MD4.new",
            "Cryptodome.Hash.MD5.new",
            "Cryptodome.Hash.SHA.new",
            "cryptography.hazmat.primitives.hashes.MD5",
            "cryptography.hazmat.primitives.hashes.SHA1",
        ],
    ),
    (
        "B304",
        &[
            "Crypto.Cipher.ARC2.new",
            "Crypto.Cipher.ARC4.new",
            "Crypto.Cipher.Blowfish.new",
            "Crypto.Cipher.DES.new",
            "Crypto.Cipher.XOR.new",
            "Cryptodome.Cipher.ARC2.new",
            "Cryptodome.Cipher.ARC4.new",
            "Cryptodome.Cipher.Blowfish.new",
            "Cryptodome.Cipher.DES.new",
            "Cryptodome.Cipher.XOR.new",
            "cryptography.hazmat.primitives.ciphers.algorithms.ARC4",
            "cryptography.hazmat.primitives.ciphers.algorithms.Blowfish",
            "cryptography.hazmat.primitives.ciphers.algorithms.CAST5",
            "cryptography.hazmat.primitives.ciphers.algorithms.IDEA",
            "cryptography.hazmat.primitives.ciphers.algorithms.SEED",
            "cryptography.hazmat.primitives.ciphers.algorithms.TripleDES",
        ],
    ),
    (
        "B305",
        &["cryptography.hazmat.primitives.ciphers.modes.ECB"],
    ),
    ("B306", &["tempfile.mktemp"]),
    ("B308", &["django.utils.safestring.mark_safe"]),
    (
        "B310",
        &[
            "urllib.request.urlopen",
            "urllib.request.urlretrieve",
            "urllib.request.URLopener",
            "urllib.request.FancyURLopener",
            "six.moves.urllib.request.urlopen",
            "six.moves.urllib.request.urlretrieve",
            "six.moves.urllib.request.URLopener",
            "six.moves.urllib.request.FancyURLopener",
        ],
    ),
    ("B312", &["telnetlib.Telnet"]),
    (
        "B313",
        &[
            "xml.etree.cElementTree.parse",
            "xml.etree.cElementTree.iterparse",
            "xml.etree.cElementTree.fromstring",
            "xml.etree.cElementTree.XMLParser",
        ],
    ),
    (
        "B314",
        &[
            "xml.etree.ElementTree.parse",
            "xml.etree.ElementTree.iterparse",
            "xml.etree.ElementTree.fromstring",
            "xml.etree.ElementTree.XMLParser",
        ],
    ),
    ("B315", &["xml.sax.expatreader.create_parser"]),
    (
        "B316",
        &[
            "xml.dom.expatbuilder.parse",
            "xml.dom.expatbuilder.parseString",
        ],
    ),
    (
        "B317",
        &[
            "xml.sax.parse",
            "xml.sax.parseString",
            "xml.sax.make_parser",
        ],
    ),
    (
        "B318",
        &["xml.dom.minidom.parse", "xml.dom.minidom.parseString"],
    ),
    (
        "B319",
        &["xml.dom.pulldom.parse", "xml.dom.pulldom.parseString"],
    ),
    ("B321", &["ftplib.FTP"]),
    ("B323", &["ssl._create_unverified_context"]),
];

/// bandit's blacklisted imports (HIGH ones): an imported name starting with one of these.
pub(super) const BLACKLISTED_IMPORTS: &[(&str, &[&str])] = &[
    ("B401", &["telnetlib"]),
    ("B402", &["ftplib"]),
    ("B411", &["xmlrpc"]),
    (
        "B412",
        &[
            "wsgiref.handlers.CGIHandler",
            "twisted.web.twcgi.CGIScript",
            "twisted.web.twcgi.CGIDirectory",
        ],
    ),
    (
        "B413",
        &[
            "Crypto.Cipher",
            "Crypto.Hash",
            "Crypto.IO",
            "Crypto.Protocol",
            "Crypto.PublicKey",
            "Crypto.Random",
            "Crypto.Signature",
            "Crypto.Util",
        ],
    ),
    ("B415", &["pyghmi"]),
];

pub(super) const HTTP_VERBS: [&str; 7] =
    ["get", "options", "head", "post", "put", "patch", "delete"];
pub(super) const WEAK_HASHES: [&str; 4] = ["md4", "md5", "sha", "sha1"];
