"""The read-only query guard: which Cypher a user may run against the graph.

Every query that reaches :meth:`graphdb.store.GraphStore.query` (the explorer's Query page,
the Python API) is parsed with an openCypher grammar (``antlr4-cypher``, the grammars-v4
Cypher grammar) and accepted only when it is **one** statement built from an allow-list:

- clauses: MATCH, OPTIONAL MATCH, WITH, UNWIND, WHERE, RETURN, ORDER BY, SKIP, LIMIT;
- ``CALL`` of a catalogue procedure in :data:`PROCEDURES` only (``CALL show_tables()``,
  ``CALL db.labels()``);
- functions in :data:`FUNCTIONS` only (aggregates, maths, strings, lists, graph accessors).

Everything else is refused before anything runs, because the grammar has no rule for it
(LOAD FROM, LOAD CSV, COPY, EXPORT, IMPORT, INSTALL, ATTACH, LOAD EXTENSION, settings such
as ``CALL timeout=0``, SHOW, BEGIN / COMMIT, a second statement after ``;``) or because
its rule is not on :data:`READ_RULES` (CREATE, MERGE, SET, DELETE, REMOVE, a standalone
CALL). The grammar is one wall; the backends add their own: a read-only transaction (and,
in the explorer, a read-only database) on LadybugDB; READ access mode and an EXPLAIN that
must report a read-only plan on Neo4j, whose local server also disables file imports.

The grammar is strict openCypher: ``UNION`` and ``EXISTS { ... }`` / ``COUNT { ... }``
subqueries do not parse, and are refused with the same message (run the parts separately).

With ``max_rows`` the query is rewritten so that the engine itself stops after that many
rows (its final RETURN gets ``LIMIT max_rows``, or keeps a smaller literal LIMIT), so a
huge result is never built in memory.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from antlr4.error.Errors import ParseCancellationException
from antlr4.error.ErrorStrategy import BailErrorStrategy
from antlr4.tree.Tree import TerminalNode
from antlr4_cypher import CypherLexer, CypherParser

from graphdb.errors import QueryRefusedError

#: What the guard accepts, in one line (the Query page shows it).
ACCEPTED = ("one read-only query: MATCH, OPTIONAL MATCH, WITH, UNWIND, WHERE, RETURN, "
            "ORDER BY, SKIP, LIMIT, and CALL of a catalogue procedure")
#: Longest query text accepted (characters); longer texts are refused unparsed.
MAX_QUERY_CHARS = 20_000

#: Grammar rules a read-only query may use. Any rule not named here (CREATE, MERGE, SET,
#: DELETE, REMOVE, a standalone CALL, and any rule a newer grammar adds) is refused.
READ_RULES = frozenset({
    "script", "query", "regularQuery", "singleQuery", "singlePartQ", "multiPartQ",
    "readingStatement", "matchSt", "unwindSt", "queryCallSt", "parenExpressionChain",
    "yieldItems", "yieldItem", "withSt", "returnSt", "projectionBody", "projectionItems",
    "projectionItem", "orderSt", "orderItem", "skipSt", "limitSt", "patternWhere", "where",
    "pattern", "patternPart", "patternElem", "patternElemChain", "nodePattern", "nodeLabels",
    "properties", "relationshipPattern", "relationDetail", "rangeLit", "relationshipTypes",
    "expression", "xorExpression", "andExpression", "notExpression", "comparisonExpression",
    "comparisonSigns", "addSubExpression", "multDivExpression", "powerExpression",
    "unaryAddSubExpression", "atomicExpression", "listExpression", "stringExpression",
    "stringExpPrefix", "nullExpression", "propertyOrLabelExpression", "propertyExpression",
    "atom", "lhs", "invocationName", "functionInvocation", "parenthesizedExpression",
    "filterWith", "patternComprehension", "relationshipsChainPattern", "listComprehension",
    "filterExpression", "countAll", "expressionChain", "caseExpression", "parameter",
    "literal", "boolLit", "numLit", "stringLit", "charLit", "listLit", "mapLit", "mapPair",
    "name", "symbol", "reservedWord",
})

#: Read-only catalogue procedures (LadybugDB's and Neo4j's), compared case-insensitively.
PROCEDURES = frozenset({
    "show_tables", "table_info", "show_connection", "db_version",
    "db.labels", "db.relationshiptypes", "db.propertykeys", "db.schema.visualization",
    "db.schema.nodetypeproperties", "db.schema.reltypeproperties",
})

#: Functions a query may call (both dialects' pure functions), compared case-insensitively.
FUNCTIONS = frozenset("""
count sum avg min max collect stdev stdevp stddev_samp stddev_pop percentilecont
percentiledisc median mode abs ceil ceiling floor round sqrt sign exp log log10 log2 ln
pow power rand e pi sin cos tan asin acos atan atan2 degrees radians isnan even factorial
gamma lgamma tointeger tofloat tostring toboolean tointegerornull tofloatornull
tostringornull tobooleanornull to_int64 to_int32 to_double to_float to_string to_bool cast
lower upper tolower toupper trim ltrim rtrim btrim replace reverse substring substr left
right split split_part concat concat_ws lpad rpad repeat size length string_length
starts_with ends_with contains prefix suffix regexp_matches regexp_replace
regexp_extract levenshtein initcap array_position coalesce nullif ifnull head last tail
range keys labels label type id elementid properties nodes relationships rels
startnode endnode exists isempty list_creation list_concat list_cat list_append
list_prepend list_contains list_has list_position list_indexof list_extract list_element
list_slice list_reverse list_sort list_reverse_sort list_sum list_product list_distinct
list_unique list_any_value list_to_string array_concat array_contains
array_slice array_extract array_append array_prepend date datetime timestamp duration
date_part datepart date_trunc datetrunc current_date current_timestamp epoch_ms
to_epoch_ms make_date dayname monthname year month day hash md5 sha256 struct_extract
map_extract element_at cardinality offset cosine_similarity array_cosine_similarity
array_distance array_inner_product array_dot_product
""".split())


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the guard: the text to run (LIMIT applied) and its row cap."""

    text: str
    max_rows: int | None


def check_read_query(text: str, *, max_rows: int | None = None,
                     target: str | None = None) -> CheckedQuery:
    """Accept ``text`` as one read-only query, or raise :class:`QueryRefusedError`.

    ``max_rows`` makes the engine stop after that many rows (see the module docstring);
    ``target`` names the graph in the error.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryRefusedError(target, "the query is empty", "write one MATCH ... RETURN query")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryRefusedError(target, f"the query has {len(text):,} characters, more than "
                                f"{MAX_QUERY_CHARS:,}", "shorten it")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be 1 or more, not {max_rows}")
    try:
        return _checked(text, max_rows)
    except QueryRefusedError as exc:
        raise QueryRefusedError(target, exc.problem, exc.fix) from None


@functools.lru_cache(maxsize=512)
def _checked(text: str, max_rows: int | None) -> CheckedQuery:
    """The verdict on one text (cached: the pages send the same few queries again and
    again, and parsing costs tens of milliseconds)."""
    tree, parser = _parse(text, None)
    _check_tree(tree, parser, None)
    if max_rows is not None:
        text = _limit(text, tree, max_rows)
    return CheckedQuery(text, max_rows)


# -- parsing --------------------------------------------------------------------------------

_PARSER_LOCK = threading.Lock()  # the generated parser's shared caches are not thread-safe


class _Refuse(ErrorListener):
    """Turns the lexer's first error into an exception (the parser bails on its own)."""

    def syntaxError(self, recognizer, offending, line, column, msg, e):  # noqa: N802
        raise ParseCancellationException(f"line {line}:{column} {msg}")


def _parse(text: str, target: str | None):
    lexer = CypherLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Refuse())
    tokens = CommonTokenStream(lexer)
    parser = CypherParser(tokens)
    parser.removeErrorListeners()
    parser._errHandler = BailErrorStrategy()
    try:
        with _PARSER_LOCK:
            return parser.script(), parser
    except (ParseCancellationException, RecursionError):
        pass
    if _several_statements(tokens):
        raise QueryRefusedError(target, "the text holds several statements and is refused: "
                                "a query is one statement",
                                "send one MATCH ... RETURN query at a time")
    raise QueryRefusedError(
        target, "the query is refused: it is not one read-only openCypher query (LOAD, "
        "COPY, EXPORT, IMPORT, INSTALL, ATTACH, settings, SHOW, transaction commands, UNION "
        "and subqueries are refused)",
        "write one query of MATCH, OPTIONAL MATCH, WITH, UNWIND, WHERE and RETURN "
        "(with ORDER BY, SKIP, LIMIT)")


def _several_statements(tokens: CommonTokenStream) -> bool:
    """Whether something other than blanks follows the first ``;`` (a second statement)."""
    try:
        tokens.fill()
    except ParseCancellationException:
        return False
    kinds = [t.type for t in tokens.tokens]
    if CypherParser.SEMI not in kinds:
        return False
    rest = kinds[kinds.index(CypherParser.SEMI) + 1:]
    return any(k not in (CypherParser.SP, CypherParser.SEMI, Token.EOF) for k in rest)


def _check_tree(tree, parser: CypherParser, target: str | None) -> None:
    names = parser.ruleNames
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, TerminalNode):
            continue
        rule = names[node.getRuleIndex()]
        if rule not in READ_RULES:
            raise QueryRefusedError(
                target, f"the query writes or runs a command ({_clause(node)}), and is "
                "refused: queries only read",
                "remove the writing clause; write through the pipeline "
                "(patientgraph run) instead")
        if rule in _INVOCATIONS:
            kind, allowed, fix = _INVOCATIONS[rule]
            name = _invocation(node)
            if name.lower() not in allowed:
                raise QueryRefusedError(target, f"the {kind} {name!r} is refused: it is not on "
                                        f"the list of read-only {kind}s", fix)
        stack.extend(node.getChildren())


# rule -> (what it calls, the allow-list, the fix)
_INVOCATIONS = {
    "queryCallSt": ("procedure", PROCEDURES,
                    f"call one of {', '.join(sorted(PROCEDURES))}, or use MATCH"),
    "functionInvocation": ("function", FUNCTIONS,
                           "use the common aggregate, maths, string and list functions "
                           "(graphdb.guard.FUNCTIONS lists them)"),
}


def _invocation(node) -> str:
    for child in node.getChildren():
        if not isinstance(child, TerminalNode) and type(child).__name__ == (
                "InvocationNameContext"):
            return "".join(c.getText() for c in child.getChildren())
    return node.getText()


def _clause(node) -> str:
    first = node.start.text if node.start is not None else ""
    return (first or type(node).__name__).upper()


# -- the row cap ------------------------------------------------------------------------------

def _limit(text: str, tree, max_rows: int) -> str:
    """``text`` with its final RETURN limited to ``max_rows`` rows."""
    body = _final_projection(tree)
    if body is None:
        return text
    limit = next((c for c in body.getChildren()
                  if type(c).__name__ == "LimitStContext"), None)
    if limit is not None:
        value = limit.getChild(limit.getChildCount() - 1).getText()
        if value.isdigit() and int(value) <= max_rows:
            return text
        return f"{text[:limit.start.start]}LIMIT {max_rows}{text[limit.stop.stop + 1:]}"
    end = body.stop.stop + 1
    return f"{text[:end]} LIMIT {max_rows}{text[end:]}"


def _final_projection(tree):
    """The projection body of the query's last RETURN (None for a bare CALL ... YIELD)."""
    node = tree
    path = ("QueryContext", "RegularQueryContext", "SingleQueryContext")
    for kind in path:
        node = _child(node, kind)
        if node is None:
            return None
    part = _child(node, "SinglePartQContext") or _child(
        _child(node, "MultiPartQContext"), "SinglePartQContext")
    ret = _child(part, "ReturnStContext")
    return _child(ret, "ProjectionBodyContext")


def _child(node, kind: str):
    if node is None:
        return None
    found = [c for c in node.getChildren() if type(c).__name__ == kind]
    return found[-1] if found else None
