-- Tags inside sequences, keyed by where they occur (the sequence path without item
-- numbers): how many instances hold them and how many times in all.
SELECT k.key AS tag,
       k.keywords AS keyword,
       k.depth,
       SUM(u.instances) AS instances,
       SUM(u.occurrences) AS occurrences
FROM tag_usage u
JOIN tag_keys k ON k.id = u.key_id
WHERE k.depth > 0
GROUP BY k.key, k.keywords, k.depth
ORDER BY instances DESC, k.key;
