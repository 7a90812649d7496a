-- One row per customer: its latest export, cleaned.
WITH ranked AS (
    SELECT customer_id,
           trim(full_name) AS full_name,
           nullif(lower(trim(email)), '') AS email,
           coalesce(upper(trim(country)), 'UNKNOWN') AS country,
           trim(city) AS city,
           updated_at,
           row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) AS rn
    FROM customers
)
SELECT customer_id, full_name, email, country, city, updated_at
FROM ranked
WHERE rn = 1
