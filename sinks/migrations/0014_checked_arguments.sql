-- strikeflow 0014: the analyst functions refuse bad arguments with a clear error instead of returning no
-- rows (a NULL argument, a range whose end is before its start) or printing their internal query (an
-- absurd number of strikes). Each function keeps its body under the name _unchecked_<name>; the public
-- name is a wrapper with the same arguments, defaults and result that checks them and returns its rows:
--   an argument NULL                   -> SQLSTATE 22004 "<function>: <argument> must not be NULL"
--                                         (timeframe: the body's own "unknown timeframe NULL: use one of ...")
--   to_ts before from_ts               -> SQLSTATE 22023 "<function>: to_ts ... is before from_ts ..."
--   strikes over 100                   -> SQLSTATE 22023 "<function>: strikes must be at most 100 ..."
--                                         (below 0: the body's own "strikes must be >= 0")
-- A later migration that changes a body replaces _unchecked_<name>, not the wrapper.
DO $do$
DECLARE
    f record;
    checks text;
    call_args text;
    arg text;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, pg_get_function_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS result,
               pg_get_function_identity_arguments(p.oid) AS ident,
               p.proargnames[1:p.pronargs] AS names  -- the input arguments (then come the result columns)
        FROM pg_proc p
        WHERE p.pronamespace = '{schema}'::regnamespace
          AND p.proname IN ('strike_distribution', 'moneyness_series', 'pcr_series', 'max_pain_series',
                            'skew_series', 'term_structure', 'gex_series', 'gex_by_strike', 'vol_index_series',
                            'chain_quality_series')
    LOOP
        EXECUTE format('ALTER FUNCTION {schema}.%I(%s) RENAME TO %I', f.proname, f.ident, '_unchecked_' || f.proname);
        checks := '';
        call_args := '';
        FOREACH arg IN ARRAY f.names LOOP
            call_args := call_args || CASE WHEN call_args = '' THEN '' ELSE ', ' END || format('%1$I => %1$I', arg);
            CONTINUE WHEN arg = 'timeframe';  -- the body names the allowed values for a NULL or unknown one
            checks := checks || format(
                'IF %1$I IS NULL THEN RAISE EXCEPTION %2$L USING ERRCODE = %3$L; END IF; ',
                arg, f.proname || ': ' || arg || ' must not be NULL', '22004');
        END LOOP;
        IF 'from_ts' = ANY (f.names) AND 'to_ts' = ANY (f.names) THEN
            checks := checks || format(
                'IF to_ts < from_ts THEN RAISE EXCEPTION %L, to_ts, from_ts USING ERRCODE = %L; END IF; ',
                f.proname || ': to_ts % is before from_ts %', '22023');
        END IF;
        IF 'strikes' = ANY (f.names) THEN
            checks := checks || format(
                'IF strikes > 100 THEN RAISE EXCEPTION %L, strikes USING ERRCODE = %L; END IF; ',
                f.proname || ': strikes must be at most 100 (strikes each side of the money), got %', '22023');
        END IF;
        EXECUTE format('CREATE FUNCTION {schema}.%I(%s) RETURNS %s LANGUAGE plpgsql STABLE AS %L',
                       f.proname, f.args, f.result,
                       'BEGIN ' || checks || format('RETURN QUERY SELECT * FROM {schema}.%I(%s); END',
                                                    '_unchecked_' || f.proname, call_args));
    END LOOP;
END
$do$;

-- rollback
DO $do$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS ident
        FROM pg_proc p
        WHERE p.pronamespace = '{schema}'::regnamespace AND p.proname LIKE '\_unchecked\_%'
    LOOP
        EXECUTE format('DROP FUNCTION {schema}.%I(%s)', substr(f.proname, 12), f.ident);
        EXECUTE format('ALTER FUNCTION {schema}.%I(%s) RENAME TO %I', f.proname, f.ident, substr(f.proname, 12));
    END LOOP;
END
$do$;
