SELECT country,
       rank() OVER (PARTITION BY country ORDER BY revenue DESC) AS country_rank,
       customer_id,
       full_name,
       orders,
       revenue
FROM customer_revenue
