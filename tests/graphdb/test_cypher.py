"""The Cypher builders: exact text, quoting, and no values pasted into statements."""

from __future__ import annotations

import pytest

from graphdb import cypher
from graphdb.schema import CLUSTER, EDGES, LESION, LESION_SIMILAR, PATIENT, PATIENT_SIMILAR


def test_quote_doubles_backticks():
    assert cypher.quote("ldh") == "`ldh`"
    assert cypher.quote("LDH (U/L)") == "`LDH (U/L)`"
    assert cypher.quote("a`b") == "`a``b`"


def test_merge_nodes_in_both_dialects():
    assert cypher.merge_nodes(PATIENT, ["sex", "age"], "neo4j") == (
        "UNWIND $rows AS row MERGE (n:`Patient` {`patient_id`: row[0]}) "
        "SET n.`sex` = row[1], n.`age` = row[2] RETURN count(n) AS written")
    assert cypher.merge_nodes(PATIENT, ["sex", "age"], "ladybug") == (
        "LOAD FROM $rows MERGE (n:`Patient` {`patient_id`: c0}) "
        "SET n.`sex` = c1, n.`age` = c2 RETURN count(n) AS written")


def test_update_nodes_matches_instead_of_merging():
    text = cypher.update_nodes(LESION, ["cluster"], "neo4j")
    assert text.startswith("UNWIND $rows AS row MATCH (n:`Lesion` {`lesion_id`: row[0]})")
    assert "MERGE" not in text


def test_merge_edges_matches_both_ends():
    assert cypher.merge_edges(LESION_SIMILAR, ["score", "rank"], "neo4j") == (
        "UNWIND $rows AS row MATCH (a:`Lesion` {`lesion_id`: row[0]}) "
        "MATCH (b:`Lesion` {`lesion_id`: row[1]}) MERGE (a)-[r:`SIMILAR_TO`]->(b) "
        "SET r.`score` = row[2], r.`rank` = row[3] RETURN count(r) AS written")


def test_unknown_dialect():
    with pytest.raises(ValueError, match="unknown dialect"):
        cypher.merge_nodes(PATIENT, [], "sparql")


def test_deletes_are_batched_on_neo4j_only():
    assert cypher.delete_nodes(CLUSTER, "neo4j") == (
        "MATCH (n:`Cluster`) CALL { WITH n DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS")
    assert cypher.delete_nodes(CLUSTER, "ladybug") == "MATCH (n:`Cluster`) DETACH DELETE n"
    assert cypher.clear_property(LESION, "cluster", "ladybug") == (
        "MATCH (n:`Lesion`) SET n.`cluster` = NULL")


def test_schema_statements():
    assert cypher.unique_constraint(PATIENT) == (
        "CREATE CONSTRAINT `patient_patient_id_unique` IF NOT EXISTS FOR (n:`Patient`) "
        "REQUIRE n.`patient_id` IS UNIQUE")
    assert cypher.node_table(CLUSTER) == (
        "CREATE NODE TABLE IF NOT EXISTS `Cluster`(`cluster_id` INT64, `size` INT64, "
        "PRIMARY KEY (`cluster_id`))")
    assert cypher.rel_table([LESION_SIMILAR, PATIENT_SIMILAR]) == (
        "CREATE REL TABLE IF NOT EXISTS `SIMILAR_TO`(FROM `Lesion` TO `Lesion`, "
        "FROM `Patient` TO `Patient`, `score` DOUBLE, `rank` INT64)")
    with pytest.raises(ValueError, match="differ"):
        cypher.rel_table([LESION_SIMILAR, EDGES["Lesion-SAME_LESION->Lesion"]])
    assert cypher.add_property("Patient", "LDH (U/L)", "DOUBLE") == (
        "ALTER TABLE `Patient` ADD IF NOT EXISTS `LDH (U/L)` DOUBLE")


def test_reads_take_values_as_parameters():
    text = cypher.similar_patients(["q.`sex` = $f0"], ["l.`coarse_type` IN $f1"])
    assert text == (
        "MATCH (p:Patient {patient_id: $id})-[s:SIMILAR_TO]->(q:Patient) "
        "WHERE q.`sex` = $f0 AND EXISTS { MATCH (q)-[:HAS_STUDY]->()-[:HAS_LESION]->"
        "(l) WHERE l.`coarse_type` IN $f1 } RETURN q.patient_id AS patient_id, "
        "s.score AS score, s.`rank` AS `rank` ORDER BY score DESC, patient_id LIMIT $k")
    assert cypher.cohort() == "MATCH (p:Patient) RETURN collect(p.patient_id) AS patient_ids"


def test_neighborhood_takes_hops_as_a_checked_integer():
    assert cypher.neighborhood(PATIENT, LESION, 2) == (
        "MATCH path = (s:`Patient` {`patient_id`: $id})-[*1..2]-(n:`Lesion`) WHERE n <> s "
        "RETURN n.`lesion_id` AS id, min(length(path)) AS hops ORDER BY hops, id")
    for bad in (0, 4):
        with pytest.raises(ValueError, match="hops"):
            cypher.neighborhood(PATIENT, LESION, bad)


def test_fresh_load_statements_on_neo4j():
    assert cypher.create_nodes(PATIENT, ["sex"]) == (
        "UNWIND $rows AS row CREATE (n:`Patient` {`patient_id`: row[0]}) "
        "SET n.`sex` = row[1] RETURN count(n) AS written")
    create = cypher.write_edges_by_id(LESION_SIMILAR, ["score"], create=True)
    assert create == (
        "UNWIND $rows AS row MATCH (a:`Lesion`) WHERE id(a) = row[0] "
        "MATCH (b:`Lesion`) WHERE id(b) = row[1] CREATE (a)-[r:`SIMILAR_TO`]->(b) "
        "SET r.`score` = row[2] RETURN count(r) AS written")
    merge = cypher.write_edges_by_id(LESION_SIMILAR, ["score"], create=False)
    assert merge == create.replace("CREATE (a)", "MERGE (a)")
    assert cypher.node_ids(LESION).startswith(
        "UNWIND $keys AS k MATCH (n:`Lesion` {`lesion_id`: k})")
    assert cypher.count_edges_from(PATIENT_SIMILAR) == (
        "MATCH (:`Patient`)-[r:`SIMILAR_TO`]->() RETURN count(r) AS n")
