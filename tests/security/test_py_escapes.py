"""Python escapes: introspection, builtins, eval of text, files, refused modules. Each ends in a refusal."""

import pytest

from tests.security.conftest import Arsenal, Tenant, function_error

pytestmark = [pytest.mark.kernel]

# Code that names an introspection route is refused at save: the attribute or name is in the message.
AT_SAVE = {
    "subclasses": ("return ().__class__.__base__.__subclasses__()", "'__subclasses__'"),
    "subclasses of object": ("return object.__subclasses__()", "'__subclasses__'"),
    "mro": ("return int.__mro__[1]", "'__mro__'"),
    "mro method": ("return type.mro(int)", "'mro'"),
    "globals of a function": ("return functions['f'].__globals__", "'__globals__'"),
    "code of a function": ("return (lambda: 0).__code__", "'__code__'"),
    "closure": ("return functions['f'].__closure__", "'__closure__'"),
    "builtins name": ("return __builtins__['open']", "'__builtins__'"),
    "builtins via module": ("import json\nreturn json.__builtins__", "'__builtins__'"),
    "loader": ("return __loader__", "'__loader__'"),
    "spec": ("return __spec__", "'__spec__'"),
    "the format guard": ("return __sandbox_attribute__('', 'format')", "'__sandbox_attribute__'"),
    "dict of a type": ("return str.__dict__", "'__dict__'"),
    "traceback of an exception": (
        "try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__",
        "'__traceback__'",
    ),
    "frame of a traceback": ("def g(tb):\n    return tb.tb_frame\nreturn 1", "'tb_frame'"),
    "generator frame": ("def g():\n    yield 1\nreturn g().gi_frame", "'gi_frame'"),
    "coroutine frame": ("async def g():\n    pass\nc = g()\nreturn c.cr_frame", "'cr_frame'"),
    "async generator frame": ("async def g():\n    yield 1\nreturn g().ag_frame", "'ag_frame'"),
    "generator code": ("def g():\n    yield 1\nreturn g().gi_code", "'gi_code'"),
    "frame globals": ("import logging\nreturn logging.currentframe().f_globals", "'f_globals'"),
    "frame builtins": ("import logging\nreturn logging.currentframe().f_builtins", "'f_builtins'"),
    "frame back": ("import traceback\nreturn next(traceback.walk_stack(None))[0].f_back", "'f_back'"),
    "reduce_ex": ("return (1).__reduce_ex__(2)", "'__reduce_ex__'"),
    "getattribute": ("return object.__getattribute__(1, 'real')", "'__getattribute__'"),
    "init_subclass": ("return object.__init_subclass__", "'__init_subclass__'"),
    "self of a builtin": ("return print.__self__", "'__self__'"),
    "func of a method": ("class A:\n    def m(self):\n        pass\nreturn A().m.__func__", "'__func__'"),
    "class of super": ("class A:\n    pass\nreturn super(A, A()).__thisclass__", "'__thisclass__'"),
    "f-string dunder": ("return f'{(1).__class__}'", "'__class__'"),
    "import star": ("from json import *", "import *"),
}


@pytest.mark.parametrize("code, fragment", AT_SAVE.values(), ids=AT_SAVE.keys())
def test_introspection_is_refused_at_save(tenant: Tenant, code: str, fragment: str) -> None:
    saved = tenant.save("attacker", {"f": code}, "python")
    assert saved.status_code == 400, saved.text
    error = saved.json()["error"]
    assert error["type"] == "CompileError"
    assert fragment in error["message"], error
    tenant.survived("python")


# Code that saves but reaches for a refused thing at run time: (code, error class, message fragment).
AT_RUN = {
    # attributes by name
    "getattr dunder": ("return getattr((), '__cla' + 'ss__')", "AttributeError", "'__class__'"),
    "hasattr dunder": ("return hasattr((), '__class__')", "AttributeError", "'__class__'"),
    "setattr dunder": (
        "class A:\n    pass\nsetattr(A, '__getattr__', print)",
        "AttributeError",
        "'__getattr__'",
    ),
    "delattr dunder": ("class A:\n    pass\ndelattr(A, '__doc__x__')", "AttributeError", "'__doc__x__'"),
    "getattr frame": (
        "import logging\nreturn getattr(logging.currentframe(), 'f_back')",
        "AttributeError",
        "'f_back'",
    ),
    "attrgetter": (
        "import operator\nreturn operator.attrgetter('__class__')(1)",
        "AttributeError",
        "'__class__'",
    ),
    "attrgetter dotted": (
        "import operator\nreturn operator.attrgetter('real.__class__')(1)",
        "AttributeError",
        "'__class__'",
    ),
    "methodcaller": (
        "import operator\nreturn operator.methodcaller('__reduce_ex__', 2)(1)",
        "AttributeError",
        "'__reduce_ex__'",
    ),
    "functools reduce getattr": (
        "import functools\nreturn str(functools.reduce(getattr, ['__class__', '__base__'], 1))",
        "AttributeError",
        "'__class__'",
    ),
    "map getattr": ("return list(map(getattr, [1], ['__class__']))", "AttributeError", "'__class__'"),
    # str.format walks attributes of its arguments
    "format": ("return '{0.__class__.__base__}'.format(1)", "AttributeError", "'__class__'"),
    "format keyword": ("return '{x.__class__}'.format(x=1)", "AttributeError", "'__class__'"),
    "format_map": (
        "return '{x.__init__.__globals__}'.format_map({'x': 1})",
        "AttributeError",
        "'__globals__'",
    ),
    "format nested spec": ("return '{0:{1.__class__}}'.format(1, 2)", "AttributeError", "'__class__'"),
    "format frame": (
        "import logging\nreturn '{0.f_globals}'.format(logging.currentframe())",
        "AttributeError",
        "'f_globals'",
    ),
    "unbound str.format": ("return str.format('{0.__class__}', 1)", "AttributeError", "'__class__'"),
    "map str.format": (
        "return list(map(str.format, ['{0.__class__}'], [1]))",
        "AttributeError",
        "'__class__'",
    ),
    "getattr format": ("return getattr('{0.__class__}', 'format')(1)", "AttributeError", "'__class__'"),
    "methodcaller format": (
        "import operator\nreturn operator.methodcaller('format', 1)('{0.__class__}')",
        "AttributeError",
        "'__class__'",
    ),
    "attrgetter format": (
        "import operator\nreturn operator.attrgetter('format')('{0.__class__}')(1)",
        "AttributeError",
        "'format'",
    ),
    "str subclass format": (
        "class S(str):\n    pass\nreturn S('{0.__class__}').format(1)",
        "AttributeError",
        "'__class__'",
    ),
    "super format": (
        "class S(str):\n    def format(self, *a):\n        return super().format(*a)\n"
        "return S('{0.__class__}').format(1)",
        "AttributeError",
        "'__class__'",
    ),
    "string.Formatter": (
        "import string\nreturn string.Formatter().format('{0.__class__}', 1)",
        "AttributeError",
        "'__class__'",
    ),
    "string.Formatter get_field": (
        "import string\nreturn str(string.Formatter().get_field('0.__class__', (1,), {}))",
        "AttributeError",
        "'__class__'",
    ),
    "Formatter subclass super": (
        "import string\nclass F(string.Formatter):\n    pass\n"
        "return str(super(F, F()).get_field('0.__class__', (1,), {}))",
        "AttributeError",
        "'__class__'",
    ),
    "logging brace style": (
        "import logging\nf = logging.Formatter('{msg.__class__}', style='{')\n"
        "return f.format(logging.makeLogRecord({'msg': 'x'}))",
        "AttributeError",
        "'__class__'",
    ),
    # eval of text by the standard library
    "get_type_hints of a class": (
        "import typing\nclass C:\n    x: \"__import__('os').getpid()\"\nreturn str(typing.get_type_hints(C))",
        "ImportError",
        "'os'",
    ),
    "get_type_hints empty globals": (
        "import typing\ndef g(x: \"__import__('os')\"):\n    pass\nreturn str(typing.get_type_hints(g, {}))",
        "ImportError",
        "'os'",
    ),
    "get_type_hints in a module's globals": (
        "import typing\nclass C:\n    __module__ = 'logging'\n    x: 'sys.modules'\n"
        "return str(typing.get_type_hints(C))",
        "NameError",
        "globals of functions",
    ),
    "ForwardRef evaluate": (
        "import typing\nref = typing.get_args(typing.List[\"__import__('os').getpid()\"])[0]\n"
        "return ref._evaluate({}, {}, recursive_guard=frozenset())",
        "ImportError",
        "'os'",
    ),
    "ForwardRef evaluate without globals": (
        "import typing\nreturn typing.ForwardRef('sys')._evaluate(None, None, recursive_guard=frozenset())",
        "NameError",
        "globals of functions",
    ),
    "dataclass field name injection": (
        "import dataclasses\nC = type('C', (), {'__annotations__': {'x=__import__(\"os\").getpid()': int}})\n"
        "return str(dataclasses.dataclass(C))",
        "TypeError",
        "identifiers",
    ),
    "timeit of text": (
        "import timeit\nreturn timeit.timeit('import os', number=1)",
        "ValueError",
        "callables",
    ),
    "timeit Timer of text": (
        "import timeit\nreturn timeit.Timer('import os').timeit(1)",
        "ValueError",
        "callables",
    ),
    "code object": (
        "import types\n"
        "return str(types.CodeType(0, 0, 0, 0, 0, 0, b'', (), (), (), '', '', '', 0, b'', b''))",
        "PermissionError",
        "code.__new__",
    ),
    # removed builtins
    "exec": ("exec('import os')", "NameError", "'exec'"),
    "eval": ("return eval('1')", "NameError", "'eval'"),
    "compile": ("return compile('1', 'x', 'eval')", "NameError", "'compile'"),
    "open": ("return open('/etc/passwd').read()", "NameError", "'open'"),
    "vars": ("return vars()", "NameError", "'vars'"),
    "globals": ("return globals()", "NameError", "'globals'"),
    "breakpoint": ("breakpoint()", "NameError", "'breakpoint'"),
    "input": ("return input()", "NameError", "'input'"),
    # imports
    "__import__ os": ("return __import__('os').getpid()", "ImportError", "PYTHON_BUILTIN_MODULES"),
    "import sys": ("import sys\nreturn sys.modules", "ImportError", "'sys'"),
    "import ctypes": ("import ctypes", "ImportError", "'ctypes'"),
    "import subinterpreters": ("import _xxsubinterpreters", "ImportError", "'_xxsubinterpreters'"),
    "import backport": ("import backports.interpreters", "ImportError", "'backports'"),
    "import importlib": (
        "import importlib\nreturn importlib.import_module('os')",
        "ImportError",
        "'importlib'",
    ),
    "import gc": ("import gc\nreturn len(gc.get_objects())", "ImportError", "'gc'"),
    "import inspect": ("import inspect", "ImportError", "'inspect'"),
    "import pickle": ("import pickle", "ImportError", "'pickle'"),
    "import marshal": ("import marshal", "ImportError", "'marshal'"),
    "import codecs": ("import codecs\nreturn codecs.open('/etc/passwd').read()", "ImportError", "'codecs'"),
    "import builtins": ("import builtins\nreturn builtins.open", "ImportError", "'builtins'"),
    "import asyncio": ("import asyncio", "ImportError", "'asyncio'"),
    "import threading": ("import threading", "ImportError", "'threading'"),
    "import _thread": ("import _thread", "ImportError", "'_thread'"),
    "import subprocess": ("import subprocess", "ImportError", "'subprocess'"),
    "logging.config": ("import logging.config", "ImportError", "'logging.config'"),
    "from logging import config": ("from logging import config", "ImportError", "'logging.config'"),
    "relative import": ("from . import sandbox", "ImportError", "relative imports"),
    # allowed modules handing out refused ones
    "tempfile._os": ("import tempfile\nreturn tempfile._os", "AttributeError", "'_os'"),
    "random._os": ("import random\nreturn random._os", "AttributeError", "'_os'"),
    "logging.sys": ("import logging\nreturn logging.sys.modules", "AttributeError", "'sys'"),
    "logging.threading": ("import logging\nreturn logging.threading", "AttributeError", "'threading'"),
    "logging.os": ("import logging\nreturn logging.os", "AttributeError", "'os'"),
    "pathlib.os": ("import pathlib\nreturn pathlib.os.environ", "AttributeError", "'os'"),
    "typing.sys": ("import typing\nreturn typing.sys", "AttributeError", "'sys'"),
    "dataclasses.inspect": ("import dataclasses\nreturn dataclasses.inspect", "AttributeError", "'inspect'"),
    "traceback.sys": ("import traceback\nreturn traceback.sys", "AttributeError", "'sys'"),
    "warnings.sys": ("import warnings\nreturn warnings.sys", "AttributeError", "'sys'"),
    "email.utils.os": ("import email.utils\nreturn email.utils.os", "AttributeError", "'os'"),
    "urllib.request.os": ("import urllib.request\nreturn urllib.request.os", "AttributeError", "'os'"),
    "http.client.socket": ("import http.client\nreturn http.client.socket", "AttributeError", "'socket'"),
    "collections._sys": ("import collections\nreturn collections._sys", "AttributeError", "'_sys'"),
    "tempfile._shutil": ("import tempfile\nreturn tempfile._shutil", "AttributeError", "'_shutil'"),
    "view internals": ("import json\nreturn getattr(json, '_modules')", "AttributeError", "'_modules'"),
    "module write": ("import json\njson.dumps = print", "AttributeError", "read-only"),
    "module delete": ("import json\ndel json.dumps", "AttributeError", "read-only"),
    # effects refused whoever asks: files outside the Python installation and the private folder
    "pathlib read": (
        "import pathlib\nreturn pathlib.Path('/etc/passwd').read_text()",
        "PermissionError",
        "open",
    ),
    "pathlib write": (
        "import pathlib\npathlib.Path('/tmp/pwned').write_text('x')",
        "PermissionError",
        "open",
    ),
    "io.open": ("import io\nreturn io.open('/etc/hostname').read()", "PermissionError", "open"),
    "io.FileIO": ("import io\nreturn io.FileIO('/etc/hostname').read()", "PermissionError", "open"),
    "io.open of a descriptor": ("import io\nreturn io.open(0, 'rb').read(10)", "PermissionError", "open"),
    "write to the protocol pipe": ("import io\nio.open(3, 'wb').write(b'{}')", "PermissionError", "open"),
    "gzip open": ("import gzip\nreturn gzip.open('/etc/passwd').read()", "PermissionError", "open"),
    "zipfile write": ("import zipfile\nzipfile.ZipFile('/tmp/x.zip', 'w')", "PermissionError", "open"),
    "tarfile open": ("import tarfile\ntarfile.open('/etc/passwd')", "PermissionError", "open"),
    "logging FileHandler": ("import logging\nlogging.FileHandler('/tmp/log')", "PermissionError", "open"),
    "urlopen file": (
        "import urllib.request\nreturn urllib.request.urlopen('file:///etc/passwd').read()",
        "URLError",
        "not allowed",
    ),
    "pathlib iterdir": (
        "import pathlib\nreturn list(pathlib.Path('/').iterdir())",
        "PermissionError",
        "of '/'",
    ),
    "pathlib mkdir": ("import pathlib\npathlib.Path('/tmp/newdir').mkdir()", "PermissionError", "mkdir"),
    "pathlib unlink": ("import pathlib\npathlib.Path('/tmp/nothing').unlink()", "PermissionError", "remove"),
    "pathlib symlink": (
        "import pathlib, tempfile\nlink = pathlib.Path(tempfile.mkdtemp()) / 'l'\n"
        "link.symlink_to('/etc/passwd')",
        "PermissionError",
        "os.symlink",
    ),
    "pathlib chmod": ("import pathlib\npathlib.Path('/tmp').chmod(0o777)", "PermissionError", "os.chmod"),
    "pathlib rename": (
        "import pathlib, tempfile\nf = pathlib.Path(tempfile.mkdtemp()) / 'f'\nf.write_text('x')\n"
        "f.rename('/tmp/out')",
        "PermissionError",
        "os.rename",
    ),
    "tempfile outside its folder": (
        "import tempfile\ntempfile.NamedTemporaryFile(dir='/tmp')",
        "PermissionError",
        "open",
    ),
}


@pytest.fixture(scope="module")
def arsenal(tenant: Tenant) -> Arsenal:
    return Arsenal(tenant, "py-escapes", {key: code for key, (code, _name, _fragment) in AT_RUN.items()})


@pytest.mark.parametrize("key", AT_RUN.keys())
def test_escapes_are_refused_at_run(tenant: Tenant, arsenal: Arsenal, key: str) -> None:
    _code, name, fragment = AT_RUN[key]
    function_error(arsenal.run(key), name, fragment)
    tenant.survived("python")


def test_tempfile_and_glob_work_inside_the_private_folder_only(tenant: Tenant) -> None:
    code = (
        "import tempfile, pathlib, glob\n"
        "with tempfile.NamedTemporaryFile('w+', suffix='.txt') as f:\n"
        "    f.write('kept'); f.flush()\n"
        "    inside = pathlib.Path(f.name).read_text()\n"
        "    found = glob.glob(str(pathlib.Path(f.name).parent / '*.txt'))\n"
        "with tempfile.TemporaryFile() as t:\n"
        "    t.write(b'x')\n"
        "return [inside, len(found), glob.glob('/etc/*')]"
    )
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == ["kept", 1, []]  # glob swallows the refused listing of /etc
    tenant.survived("python")


def test_legitimate_formatting_still_works(tenant: Tenant) -> None:
    code = (
        "import string, logging, operator\n"
        "class P:\n    x = 3\n"
        "brace = logging.Formatter('{levelname}:{message}', style='{')\n"
        "logging.getLogger().handlers[0].setFormatter(brace)\n"
        "logging.info('hi')\n"
        "return ['{0.x} {1[a]} {2:>4}'.format(P(), {'a': 1}, 'r'), '{n}'.format_map({'n': 2}), "
        "string.Formatter().format('{0.real}', 5), operator.methodcaller('format', 7)('{}'), "
        "str.format('{}', 8)]"
    )
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == ["3 1    r", "2", "5", "7", "8"]
    assert answer.json()["logs"][0]["message"] == "hi"
    tenant.survived("python")
