-- Private creators: which vendors' private blocks appear, in which group, in how many instances.
-- A creator element is keyed by group and creator whatever block it reserved in a file:
-- (gggg,"CREATOR") (see README: Database schema); the group is written in hex, as in the key.
SELECT k.private_creator,
       substr(k.key, 2, 4) AS private_group,
       SUM(u.instances) AS instances
FROM tag_usage u
JOIN tag_keys k ON k.id = u.key_id
WHERE k.depth = 0
  AND k.private_creator IS NOT NULL
  AND k.tag % 65536 = 16
GROUP BY k.private_creator, substr(k.key, 2, 4)
ORDER BY instances DESC, k.private_creator, substr(k.key, 2, 4);
