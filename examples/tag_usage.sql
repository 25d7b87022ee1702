-- Tag usage across the archive, from the summary tables the writer keeps (fast at any size):
-- for each tag key, the instances that hold it and how often it occurs.
-- Run: indexer sql - < examples/tag_usage.sql
SELECT k.key AS tag,
       k.keywords AS keyword,
       SUM(u.instances) AS instances,
       SUM(u.occurrences) AS occurrences
FROM tag_usage u
JOIN tag_keys k ON k.id = u.key_id
GROUP BY k.key, k.keywords
ORDER BY k.key;
